//! `ferry verify --to SINK`: reads back every object the manifest lists and checks that it
//! is one gzip member that decodes to the recorded length and CRC-32, at the recorded size.

use crate::error::{ExitCode, FerryError};
use crate::inflate::inflate_object;
use crate::journal::{for_each_current, HistoryError, Scope};
use crate::manifest::{manifest_name, Entry};
use crate::metrics::RunMetrics;
use crate::pipeline::{CancelToken, Emitter, Pipeline, Producer, StageSpec};
use crate::report::{Level, Log};
use crate::report::{ProgressMode, Reporter};
use crate::shard::Shard;
use crate::sink::{self, SinkOptions, SinkSpec};
use crate::task::object_key;
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

impl VerifyReport {
    /// The report as pretty JSON: `checked`, `ok`, and `mismatches` (key, problem).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["ok"] = (self.checked - self.mismatches.len()).into();
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Prints each bad object as an error and, unless `level` is errors only, the tally;
    /// returns the exit code: 0 when every object checks out, 1 otherwise.
    pub fn print(&self, level: Level) -> ExitCode {
        let log = Log::stderr(level);
        for m in &self.mismatches {
            log.error(|| format!("verify: {}: {}", m.key.display(), m.problem));
        }
        let bad = self.mismatches.len();
        if self.interrupted {
            log.status(|| {
                format!(
                    "interrupted: verified {} of {} objects: {} ok, {bad} bad",
                    self.checked,
                    self.listed,
                    self.checked - bad
                )
            });
            return ExitCode::Interrupted;
        }
        log.status(|| {
            format!(
                "verified {} objects: {} ok, {bad} bad",
                self.checked,
                self.checked - bad
            )
        });
        if bad == 0 {
            ExitCode::Success
        } else {
            ExitCode::Failures
        }
    }
}

/// One object that did not check out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mismatch {
    /// The object's key at the sink.
    #[serde(serialize_with = "lossy_path")]
    pub key: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What `verify` found (`--report` writes it as JSON, with `ok` added).
#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Objects the history lists.
    pub listed: u64,
    /// Objects checked.
    pub checked: usize,
    /// Ctrl-C, SIGTERM or the caller's token ended the check before every object was read.
    pub interrupted: bool,
    /// Objects that failed a check, sorted by key.
    pub mismatches: Vec<Mismatch>,
}

/// Checks one object, read as a stream, against its manifest entry: one gzip member that
/// decodes to the recorded length and CRC-32, at the recorded compressed size. (The same
/// reading as `ferry restore`'s, into nowhere.)
///
/// # Errors
/// What is wrong, in words.
pub fn check_object(entry: &Entry, object: impl Read) -> Result<(), String> {
    inflate_object(Some(entry), object, &mut std::io::sink(), &|_| {}).map(|_| ())
}

/// How `verify` runs: where it shows progress and how much it says.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Progress bars.
    pub progress: ProgressMode,
    /// Log level.
    pub log_level: Level,
    /// Objects checked at once.
    pub workers: NonZeroUsize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            progress: ProgressMode::Never,
            log_level: Level::Warn,
            workers: crate::config::cores().max(NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

/// One object checked: its key, and what is wrong with it, if anything.
type Checked = (PathBuf, Result<(), String>);

/// Verifies every object the sink's manifest and journal list (the current entry of each
/// key) on the pipeline engine: a producer streams the entries, `check` workers stream
/// each object through the decoder, a collector tallies. Progress shows as for a run.
///
/// # Errors
/// [`FerryError::Usage`] when the sink has no manifest or journal, or one is damaged;
/// [`FerryError::Sink`] when it cannot be opened or read.
pub fn verify(
    spec: &SinkSpec,
    shard: Option<Shard>,
    opts: VerifyOptions,
    cancel: CancelToken,
) -> Result<VerifyReport, FerryError> {
    let sink = sink::open(
        spec,
        &SinkOptions {
            read_only: true,
            cancel: cancel.clone(),
            ..SinkOptions::default()
        },
    )?;
    let describe = sink.describe();
    let metrics = Arc::new(RunMetrics::default());
    let (reporter, _log) = Reporter::start(opts.progress, opts.log_level, metrics.clone());
    let read: Arc<Mutex<Option<Result<u64, HistoryError>>>> = Arc::default();
    let (src, m, result) = (sink.clone(), metrics.clone(), read.clone());
    let producer: Producer<Entry> = Box::new(move |out: &Emitter<Entry>| {
        let scope = shard.map_or(Scope::Every, |s| Scope::One(Some(s)));
        let r = for_each_current(src.as_ref(), scope, |e| {
            m.discovered.fetch_add(1, Relaxed);
            m.opened.fetch_add(1, Relaxed);
            m.opened_bytes.fetch_add(e.bytes_out, Relaxed);
            let _ = out.emit(e);
        });
        m.discovery_done.store(true, Relaxed);
        *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.map(|(n, _)| n));
    });
    let mut p = Pipeline::new(cancel.clone());
    let (m, m2) = (metrics.clone(), metrics.clone());
    let collected = p
        .source(
            "manifest",
            NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            vec![producer],
        )?
        .stage(StageSpec::new("check", opts.workers), move |_| {
            let (sink, m) = (sink.clone(), m.clone());
            move |e: Entry, out: &Emitter<Checked>| {
                if out.is_cancelled() {
                    return; // not checked: the tally counts it as such
                }
                let key = object_key(&PathBuf::from(&e.key));
                let r = sink
                    .open_object(&key)
                    .map_err(|err| err.to_string())
                    .and_then(|object| check_object(&e, object));
                m.restored(e.bytes_out);
                let _ = out.emit((key, r));
            }
        })?
        .collect(
            "tally",
            NonZeroUsize::MIN,
            |_| VerifyReport::default(),
            move |rep, (key, r): Checked| {
                rep.checked += 1;
                match r {
                    Ok(()) => m2.succeeded.fetch_add(1, Relaxed),
                    Err(problem) => {
                        rep.mismatches.push(Mismatch { key, problem });
                        m2.failed.fetch_add(1, Relaxed)
                    }
                };
            },
        )?;
    reporter.set_stages(p.metrics());
    p.wait()?;
    drop(reporter);
    let found = read.lock().unwrap_or_else(|e| e.into_inner()).take();
    let n = match found {
        Some(Ok(n)) => n,
        Some(Err(e)) => return Err(e.into()),
        None => 0,
    };
    if n == 0 {
        return Err(FerryError::Usage(match shard {
            Some(s) => format!(
                "{describe}: no manifest ({}) to verify against",
                manifest_name(Some(s))
            ),
            None => format!(
                "{describe}: no manifest ({} or one per shard) to verify against",
                manifest_name(None)
            ),
        }));
    }
    let mut report = VerifyReport {
        listed: n,
        interrupted: cancel.reason().is_some(),
        ..VerifyReport::default()
    };
    for r in collected.into_vec() {
        report.checked += r.checked;
        report.mismatches.extend(r.mismatches);
    }
    report.mismatches.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}
