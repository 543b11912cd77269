//! `run(config, cancel)`: wires producers, the load → compress → upload stages and the
//! collector into one pipeline, runs it, and returns the summary.

use crate::config::Config;
use crate::error::FerryError;
use crate::gzip::{self, SegmentCompressor};
use crate::load::{Budget, Loader};
use crate::manifest::{manifest_name, Entry, Manifest};
use crate::metrics::RunMetrics;
use crate::pipeline::{
    CancelReason, CancelToken, Emitter, EngineEvent, Pipeline, PipelineError, Producer, StageSpec,
};
use crate::report::{Failure, Log, Reporter, StageSummary, Summary, Totals};
use crate::sink::{self, SinkOptions};
use crate::task::{FileTask, Outcome, Packed, PackedBody, Segment, SegmentBody, Status, Verdict};
use crate::upload::Uploader;
use crate::walk::{self, Walker};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// The collector's state: failures to list and entries for the manifest. Counts live in
/// [`RunMetrics`], so progress, summary and report read the same numbers.
struct Ledger {
    metrics: Arc<RunMetrics>,
    log: Log,
    failures: Vec<Failure>,
    records: Vec<Entry>,
}

impl Ledger {
    fn record(&mut self, o: Outcome) {
        let m = &self.metrics;
        match o.status {
            Status::Succeeded => {
                m.bytes_in.fetch_add(o.bytes_in, Relaxed);
                m.bytes_out.fetch_add(o.bytes_out, Relaxed);
                self.records.extend(o.record);
                m.succeeded.fetch_add(1, Relaxed);
            }
            Status::Skipped(why) => {
                self.log
                    .info(|| format!("[skip] {}: {why}", o.task.path.display()));
                m.skipped.fetch_add(1, Relaxed);
            }
            Status::Failed { stage, error } => {
                self.log.file_error(&o.task.path, &error);
                self.failures
                    .push(Failure::new(&o.task.path, stage, &error));
                m.failed.fetch_add(1, Relaxed);
            }
            Status::Cancelled => {
                m.cancelled.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The compress stage's work on one segment; a `Stop` passes through untouched.
fn compress_segment(c: &mut SegmentCompressor, s: Segment, out: &Emitter<Packed>) {
    let body = match s.body {
        SegmentBody::Stop(v) => PackedBody::Stop(v),
        SegmentBody::Data { .. } if out.is_cancelled() => PackedBody::Stop(Verdict::Cancelled),
        SegmentBody::Data { .. } if s.file.timed_out() => PackedBody::Stop(Verdict::Failed {
            stage: "compress",
            error: "timed out (--task-timeout)".into(),
        }),
        SegmentBody::Data {
            data,
            dict,
            last,
            permit,
        } => match c.compress(&data, dict.as_deref(), last) {
            Ok(deflate) => PackedBody::Data {
                deflate,
                crc: gzip::crc32(&data),
                len: data.len() as u64,
                last,
                permit,
            },
            Err(e) => PackedBody::Stop(Verdict::Failed {
                stage: "compress",
                error: e.to_string(),
            }),
        },
    };
    let _ = out.emit(Packed {
        file: s.file,
        index: s.index,
        body,
    });
}

fn describe_event(e: &EngineEvent) -> String {
    match e {
        EngineEvent::WorkerStarted { stage, worker } => format!("{stage} worker {worker} started"),
        EngineEvent::WorkerStopped {
            stage,
            worker,
            items,
        } => format!("{stage} worker {worker} stopped after {items} items"),
        EngineEvent::ChannelClosed { stage } => {
            format!("{stage} finished; its output channel is closed")
        }
        EngineEvent::Panic { stage, message } => format!("{stage} worker panicked: {message}"),
    }
}

/// Runs ferry: every file under the configured inputs is loaded, gzip-compressed and
/// delivered to the sink. Stops early, cleanly, when `cancel` is cancelled.
///
/// Per-file problems do not make this fail: they are counted in the returned
/// [`Summary`], whose [`Summary::exit_code`] says how the run went.
///
/// # Errors
/// [`FerryError::Usage`] for bad inputs (missing, colliding keys, bad globs) and
/// [`FerryError::Sink`] for an unusable sink — both before any file is read.
pub fn run(config: &Config, cancel: CancelToken) -> Result<Summary, FerryError> {
    let started = Instant::now();
    let roots = walk::plan_roots(&config.inputs)?;
    if roots.is_empty() && config.files_from.is_none() {
        return Err(FerryError::Usage("no inputs given".into()));
    }
    if let Some(list) = config
        .files_from
        .as_deref()
        .filter(|l| l.as_os_str() != "-")
    {
        std::fs::File::open(list).map_err(|e| {
            FerryError::Usage(format!(
                "--files-from {}: {}",
                list.display(),
                crate::error::io_words(&e)
            ))
        })?;
    }
    // Every check that can fail on the user's input runs before the sink is touched.
    let root_overrides = roots
        .iter()
        .map(|r| match r.is_dir {
            true => walk::overrides(&r.path, &config.include, &config.exclude),
            false => Ok(None),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let list_overrides = match config.files_from {
        Some(_) => walk::overrides(Path::new(""), &config.include, &config.exclude)?,
        None => None,
    };
    let sink = sink::open(
        &config.sink,
        &SinkOptions {
            fsync: config.fsync,
            cancel: cancel.clone(),
        },
    )?;
    let manifest = match sink.read_meta(&manifest_name(config.shard))? {
        Some(bytes) => match Manifest::from_bytes(&bytes) {
            Ok(m) => m,
            Err(_) if config.force => Manifest::default(),
            Err(e) => return Err(FerryError::Usage(e.to_string())),
        },
        None => Manifest::default(),
    };
    let manifest = Arc::new(manifest);
    let skip_dir = sink
        .local_root()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()));

    let metrics = Arc::new(RunMetrics::default());
    let (reporter, log) = Reporter::start(config.progress, config.log_level, metrics.clone());
    let walker = Arc::new(Walker {
        follow: config.follow,
        skip_dir,
        metrics: metrics.clone(),
        log: log.clone(),
        next_id: AtomicU64::new(0),
        shard: config.shard,
    });
    let mut producers: Vec<Producer<FileTask>> = Vec::new();
    for (root, ov) in roots.into_iter().zip(root_overrides) {
        producers.push(walker.root_producer(root, ov));
    }
    if let Some(list) = &config.files_from {
        producers.push(walker.list_producer(list.clone(), config.null_separated, list_overrides));
    }
    // Discovery is complete (an ETA becomes meaningful) once the last producer returns.
    let remaining = Arc::new(AtomicUsize::new(producers.len()));
    let producers: Vec<Producer<FileTask>> = producers
        .into_iter()
        .map(|p| {
            let (remaining, metrics) = (remaining.clone(), metrics.clone());
            Box::new(move |out: &Emitter<FileTask>| {
                p(out);
                if remaining.fetch_sub(1, Relaxed) == 1 {
                    metrics.discovery_done.store(true, Relaxed);
                }
            }) as Producer<FileTask>
        })
        .collect();

    let loader = Arc::new(Loader {
        segment_size: config.segment_size,
        follow: config.follow,
        force: config.force,
        manifest: manifest.clone(),
        sink: sink.clone(),
        budget: Budget::new(config.memory, metrics.clone()),
        metrics: metrics.clone(),
        task_timeout: config.task_timeout,
        log: log.clone(),
    });
    let uploader = Arc::new(Uploader {
        sink: sink.clone(),
        level: config.level,
        log: log.clone(),
        retries: config.retries,
        backoff: config.retry_backoff,
        task_timeout: config.task_timeout,
    });
    let level = config.level;
    let mut pipeline = Pipeline::new(cancel.clone());
    if log.enabled(crate::report::Level::Debug) {
        let l = log.clone();
        pipeline.observe(move |e| l.debug(|| describe_event(e)));
    }
    let (ledger_metrics, ledger_log) = (metrics.clone(), log.clone());
    let ledgers = pipeline
        .source("walk", config.queue, producers)
        .and_then(|f| {
            f.stage(
                StageSpec::new("load", config.load_workers).queue(config.queue),
                move |_| {
                    let loader = loader.clone();
                    move |t: FileTask, out: &Emitter<Segment>| loader.load(t, out)
                },
            )
        })
        .and_then(|f| {
            f.stage(
                StageSpec::new("compress", config.jobs).queue(config.queue),
                move |_| {
                    let mut c = SegmentCompressor::new(level);
                    move |s: Segment, out: &Emitter<Packed>| compress_segment(&mut c, s, out)
                },
            )
        })
        .and_then(|f| {
            f.stage(
                StageSpec::new("upload", config.upload_workers).queue(config.queue),
                move |_| {
                    let up = uploader.clone();
                    move |p: Packed, out: &Emitter<Outcome>| up.handle(p, out)
                },
            )
        })
        .and_then(|f| {
            f.collect(
                "record",
                1,
                move |_| Ledger {
                    metrics: ledger_metrics.clone(),
                    log: ledger_log.clone(),
                    failures: Vec::new(),
                    records: Vec::new(),
                },
                Ledger::record,
            )
        });
    let stages = pipeline.metrics();
    reporter.set_stages(stages.clone());
    let (deadline_done, deadline_rx) = crossbeam_channel::bounded::<()>(0);
    if let Some(t) = config.timeout {
        let _ = cancel.deadline(t, deadline_rx);
    }
    // Even when building failed part-way, wait for what was started to drain.
    let waited = pipeline.wait();
    drop(deadline_done);
    let ledgers = match ledgers {
        Ok(l) => l.into_vec(),
        Err(e) => {
            reporter.finish();
            return Err(e.into());
        }
    };

    let mut warnings = Vec::new();
    if let Err(PipelineError::Panicked { .. }) = &waited {
        if let Err(e) = &waited {
            warnings.push(e.to_string());
        }
    }
    let mut failures = Vec::new();
    let mut records = Vec::new();
    for l in ledgers {
        failures.extend(l.failures);
        records.extend(l.records);
    }
    if !records.is_empty() {
        let mut m = Arc::try_unwrap(manifest).unwrap_or_else(|a| (*a).clone());
        for r in records {
            m.insert(r);
        }
        if let Err(e) = sink.write_meta(&manifest_name(config.shard), &m.to_bytes()) {
            warnings.push(format!(
                "could not save the manifest ({e}); the next run will redo these files"
            ));
        }
    }
    reporter.finish();

    let reason = cancel.reason();
    let get = |a: &AtomicU64| a.load(Relaxed);
    let mut totals = Totals {
        discovered: get(&metrics.discovered),
        succeeded: get(&metrics.succeeded),
        skipped: get(&metrics.skipped),
        failed: get(&metrics.failed),
        cancelled: get(&metrics.cancelled),
        bytes_in: get(&metrics.bytes_in),
        bytes_out: get(&metrics.bytes_out),
    };
    // Files found but never finished: left in the bridge when a cancel cut the producers
    // off, or lost to a worker panic. They are counted, never dropped silently.
    let unaccounted = totals.discovered.saturating_sub(metrics.finished());
    if unaccounted > 0 {
        if reason.is_some() {
            totals.cancelled += unaccounted;
        } else {
            totals.failed += unaccounted;
            failures.push(Failure::new(
                Path::new("(unknown)"),
                "pipeline",
                &format!("internal error: {unaccounted} files lost track of"),
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Summary {
        duration_s: secs,
        mib_per_s: get(&metrics.bytes_read) as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
        files_per_s: (totals.succeeded + totals.skipped + totals.failed) as f64 / secs.max(1e-9),
        totals,
        sink: sink.describe(),
        stages: stages
            .iter()
            .map(|m| StageSummary::from_metrics(m))
            .collect(),
        failures,
        cancelled: reason.map(|r: CancelReason| r.to_string()),
        cancel_reason: reason,
        warnings,
    })
}
