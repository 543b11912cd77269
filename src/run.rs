//! `run(config, cancel)`: ferry's pipeline, wired as the design's diagram draws it —
//! producers → load → compress → upload → record — run, waited on and summarised.

use crate::compress::Compressor;
use crate::config::{Config, Tuning};
use crate::error::FerryError;
use crate::ledger::Ledger;
use crate::metrics::RunMetrics;
use crate::pipeline::{CancelToken, Collected, Emitter, Pipeline, PipelineError, StageSpec};
use crate::plan::Plan;
use crate::report::{Level, Log, Reporter, Summary};
use crate::shard::report::ShardRun;
use crate::task::{FileTask, Outcome, Packed, Segment};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

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
    let plan = Plan::prepare(config, &cancel)?;
    let _deadline = start_deadline(&cancel, config.delivery().timeout)?;
    // A shard says at the sink that it is running, so `ferry report` can tell a shard
    // that died from one that finished.
    let store = plan.sink();
    let shard_run = (config.inputs().shard)
        .filter(|_| !config.delivery().dry_run)
        .map(|s| (s, ShardRun::starting(s, config.inputs().plan.clone())));
    let mut report_warnings = Vec::new();
    if let Some((s, r)) = &shard_run {
        if let Err(e) = r.write(store.as_ref(), *s, None) {
            report_warnings.push(format!("could not write the shard report: {e}"));
        }
    }
    let metrics = Arc::new(RunMetrics::default());
    let out = config.output();
    let (reporter, log) =
        Reporter::start_painted(out.progress, out.log_level, metrics.clone(), out.color);
    let mut pipeline = Pipeline::new(cancel.clone());
    if log.enabled(Level::Debug) {
        let l = log.clone();
        pipeline.observe(move |e| l.debug(|| e.to_string()));
    }
    let journal = plan.journal(&log)?;
    let listing = config.delivery().dry_run.then_some(out.listing);
    let ledger = Ledger::new(metrics.clone(), log.clone(), Some(journal.recorder()))
        .listing(listing, "send");
    let t = config.tuning();
    let ledgers = build(&mut pipeline, &plan, t, ledger, &metrics, &log);
    let stages = pipeline.metrics();
    reporter.set_stages(stages.clone());
    // Even when building failed part-way, wait for what was started to drain.
    let waited = pipeline.wait();
    let ledgers = ledgers?.into_vec();
    let sink = plan.describe_sink();
    metrics.retries.fetch_add(plan.sink_retries(), Relaxed);
    let mut warnings: Vec<String> = waited.err().map(|e| e.to_string()).into_iter().collect();
    warnings.append(&mut report_warnings);
    warnings.extend(plan.finish(journal, &log));
    let timeline = reporter.finish();
    let mut summary = Summary::build(
        &metrics,
        &stages,
        Ledger::merge(ledgers),
        cancel.reason(),
        warnings,
        sink,
        started.elapsed(),
    );
    summary.timeline = timeline;
    if config.delivery().dry_run {
        summary.mark_dry_run(&metrics);
    }
    if let Some((s, r)) = shard_run {
        if let Err(e) = r.ended(&summary).write(store.as_ref(), s, Some(&summary)) {
            summary
                .warnings
                .push(format!("could not write the shard report: {e}"));
        }
    }
    Ok(summary)
}

/// Starts the `--timeout` watchdog; it stops when the returned sender is dropped.
///
/// # Errors
/// [`FerryError::Usage`] when its thread cannot start: a deadline that silently would not
/// fire is worse than none.
pub(crate) fn start_deadline(
    cancel: &CancelToken,
    timeout: Option<std::time::Duration>,
) -> Result<crossbeam_channel::Sender<()>, FerryError> {
    let (done, done_rx) = crossbeam_channel::bounded::<()>(0);
    if let Some(t) = timeout {
        cancel
            .deadline(t, done_rx)
            .map_err(|e| FerryError::Usage(format!("cannot start the --timeout watchdog: {e}")))?;
    }
    Ok(done)
}

/// Declares the stages: walk → load → compress → upload → record.
fn build(
    p: &mut Pipeline,
    plan: &Plan,
    t: &Tuning,
    ledger: Ledger,
    metrics: &Arc<RunMetrics>,
    log: &Log,
) -> Result<Collected<Ledger>, PipelineError> {
    let loader = Arc::new(plan.loader(metrics, log));
    let uploader = Arc::new(plan.uploader(metrics, log));
    let level = t.level;
    p.source("walk", t.queue, plan.producers(metrics, log))?
        .stage(stage("load", t.load_workers, t), move |_| {
            let loader = loader.clone();
            move |f: FileTask, out: &Emitter<Segment>| loader.load(f, out)
        })?
        .stage(stage("compress", t.jobs, t), move |_| {
            let mut c = Compressor::new(level);
            move |s: Segment, out: &Emitter<Packed>| c.handle(s, out)
        })?
        .stage(stage("upload", t.upload_workers, t), move |_| {
            let up = uploader.clone();
            move |p: Packed, out: &Emitter<Outcome>| up.handle(p, out)
        })?
        .collect(
            "record",
            NonZeroUsize::MIN,
            move |_| ledger.clone(),
            Ledger::record,
        )
}

fn stage(name: &str, workers: NonZeroUsize, t: &Tuning) -> StageSpec {
    StageSpec::new(name, workers).queue(t.queue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkSpec;
    use std::io::Read;
    use std::time::Duration;

    /// A `--timeout` whose watchdog thread cannot start is a setup error naming it, before
    /// any file is read — never a run that silently has no deadline.
    #[test]
    fn a_timeout_whose_watchdog_cannot_start_is_a_setup_error() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), "a\n").unwrap();
        let out = t.path().join("out");
        let config = Config::builder(vec![src], SinkSpec::Dir(out.clone()))
            .timeout(Duration::from_secs(3600))
            .build()
            .unwrap();
        crate::pipeline::FAIL_DEADLINE_SPAWN.set(true);
        let result = run(&config, CancelToken::new());
        crate::pipeline::FAIL_DEADLINE_SPAWN.set(false);
        let err = result.expect_err("a run without its deadline went ahead");
        assert!(matches!(err, FerryError::Usage(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("--timeout watchdog"), "{msg}");
        assert!(msg.contains("Resource temporarily unavailable"), "{msg}");
        assert!(!out.join("src/a.gz").exists());
    }

    /// A panic in a load, compress or upload worker fails that file alone, by name; every
    /// other file is delivered whole and the run ends (the test hooks panic on the name).
    #[test]
    fn a_panic_in_a_stage_fails_that_file_and_the_run_goes_on() {
        for (name, stage) in [
            ("ferry-test-panic-in-load", "load"),
            ("ferry-test-panic-in-compress", "compress"),
            ("ferry-test-panic-in-upload", "upload"),
            // In the handler's body, outside the stage's inner catch, at a middle segment.
            ("ferry-test-panic-in-compress-body", "compress"),
            ("ferry-test-panic-in-upload-body", "upload"),
        ] {
            let t = tempfile::tempdir().unwrap();
            let src = t.path().join("src");
            std::fs::create_dir_all(&src).unwrap();
            // Several segments, so the panic strands later pieces of the same file.
            std::fs::write(src.join(name), vec![b'x'; 300 << 10]).unwrap();
            for i in 0..20 {
                std::fs::write(src.join(format!("f{i}")), format!("{i}\n").repeat(5000)).unwrap();
            }
            let out = t.path().join("out");
            let config = Config::builder(vec![src], SinkSpec::Dir(out.clone()))
                .segment_size(64 << 10)
                .memory(128 << 10)
                .queue(NonZeroUsize::MIN)
                .build()
                .unwrap();
            let (tx, rx) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                let _ = tx.send(run(&config, CancelToken::new()));
            });
            let summary = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("the run hung after a panic")
                .unwrap();
            let totals = &summary.totals;
            assert_eq!((totals.succeeded, totals.failed), (20, 1), "{stage}");
            let f = &summary.failures[0];
            assert!(f.path.ends_with(name), "{f:?}");
            assert_eq!(f.stage.to_string(), stage);
            assert!(
                f.error
                    .starts_with(&format!("internal error: a {stage} worker panicked")),
                "{f:?}"
            );
            assert!(!out.join("src").join(format!("{name}.gz")).exists());
            for i in 0..20 {
                let gz = std::fs::read(out.join(format!("src/f{i}.gz"))).unwrap();
                let mut back = String::new();
                flate2::read::MultiGzDecoder::new(&gz[..])
                    .read_to_string(&mut back)
                    .unwrap();
                assert_eq!(back, format!("{i}\n").repeat(5000));
            }
            let names: Vec<String> = std::fs::read_dir(out.join("src"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| !n.contains(".ferry-tmp-")),
                "{names:?}"
            );
        }
    }
}
