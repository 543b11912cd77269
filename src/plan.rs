//! A run, prepared: every check of the user's input done before the sink is touched, then
//! the sink opened and its manifest read. The [`Plan`] builds the stage workers from that.

use crate::budget::Budget;
use crate::config::Config;
use crate::error::FerryError;
use crate::journal::{compact, History, Journal};
use crate::lease::Lease;
use crate::load::Loader;
use crate::manifest::Index;
use crate::metrics::RunMetrics;
use crate::pipeline::{CancelToken, Producer};
use crate::report::Log;
use crate::shard::plan::{gone, read_list, PlanHeader};
use crate::sink::{self, Sink, SinkOptions};
use crate::task::FileTask;
use crate::upload::Uploader;
use crate::walk::{Keyed, Sources, Walker};
use std::sync::{Arc, Mutex, OnceLock};

/// List K of plan `id` at the sink, as the producers read it.
fn planned(
    sink: &dyn Sink,
    id: &str,
    shard: Option<crate::shard::Shard>,
    allowed: Vec<std::path::PathBuf>,
) -> Result<Arc<Mutex<Option<Keyed>>>, FerryError> {
    let header = PlanHeader::read(sink, id)?;
    let shard = shard.ok_or_else(|| {
        FerryError::Usage(format!(
            "--plan {id} needs --shard K/{}: the plan holds {} lists",
            header.shards, header.shards
        ))
    })?;
    let files = read_list(sink, &header, shard)?.map(|r| {
        r.map(|p| {
            (
                std::path::PathBuf::from(&p.path),
                std::path::PathBuf::from(&p.key),
            )
        })
    });
    Ok(Arc::new(Mutex::new(Some(Keyed {
        name: PlanHeader::list_name(id, shard),
        files: Box::new(files),
        gone: gone(&header).to_string(),
        allowed,
    }))))
}

/// A log attached after it is first written to: lines before then wait, in order.
#[derive(Default)]
struct LateLog {
    log: OnceLock<Log>,
    early: Mutex<Vec<String>>,
}

impl LateLog {
    fn debug(&self, line: &str) {
        match self.log.get() {
            Some(l) => l.debug(|| line.to_string()),
            None => self
                .early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.to_string()),
        }
    }

    fn attach(&self, log: &Log) {
        let _ = self.log.set(log.clone());
        for line in self
            .early
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            log.debug(|| line);
        }
    }
}

/// Everything a run needs before its first file is read.
pub struct Plan<'c> {
    config: &'c Config,
    /// The inputs, checked, with their filters.
    sources: Sources,
    /// The open sink.
    sink: Arc<dyn Sink>,
    /// What earlier runs delivered (empty on a first run), by key hash.
    index: Arc<Index>,
    /// The first journal segment this run writes.
    next_seq: u64,
    /// Problems found reading the history (torn records), for the summary.
    warnings: Vec<String>,
    /// The run's log, once it has one, for the sink client's events.
    log: Arc<LateLog>,
    /// This run's id, in its journal segments' names and its lease.
    run_id: String,
    /// The history's lease, held until the journal is folded (none for a dry run).
    lease: Option<Lease>,
}

impl<'c> Plan<'c> {
    /// Checks the inputs, then opens the sink and reads its manifest.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for bad inputs or an unreadable manifest (unless `--force`),
    /// [`FerryError::Sink`] for an unusable sink.
    pub fn prepare(config: &'c Config, cancel: &CancelToken) -> Result<Self, FerryError> {
        let mut sources = Sources::prepare(config.inputs())?;
        let delivery = config.delivery();
        // The sink opens before the reporter starts: its client's events (retries) wait
        // here until the run attaches its log.
        let log = Arc::new(LateLog::default());
        let late = log.clone();
        let options = SinkOptions {
            fsync: delivery.fsync,
            cancel: cancel.clone(),
            retry: Some((delivery.retries, delivery.retry_backoff)),
            on_event: Some(Arc::new(move |line: &str| late.debug(line))),
            read_only: delivery.dry_run,
        };
        let sink = sink::open(&delivery.sink, &options)?;
        let run_id = crate::ident::unique_id();
        // One writer per history: taken before the history is read, so what this run
        // reads is not changed under it by another delivery (a dry run writes nothing).
        let lease = match delivery.dry_run {
            true => None,
            false => Some(Lease::acquire(
                sink.clone(),
                config.inputs().shard,
                &run_id,
            )?),
        };
        if let Some(id) = &config.inputs().plan {
            // The INPUTs of a planned run are not walked: they bound what the list may name.
            let allowed = std::mem::take(&mut sources.roots)
                .into_iter()
                .map(|(r, _)| {
                    std::fs::canonicalize(&r.path).map_err(|e| {
                        FerryError::Usage(format!(
                            "{}: {}",
                            r.path.display(),
                            crate::words::io_words(&e)
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let none = allowed.is_empty();
            sources.keyed = Some(planned(sink.as_ref(), id, config.inputs().shard, allowed)?);
            if none {
                return Err(FerryError::Usage(format!(
                    "--plan {id} needs the INPUTs the plan was made from (ferry --plan {id} --shard K/N /data …): only files under them are taken, whatever the list at the sink names"
                )));
            }
        }
        let history = match History::read(sink.as_ref(), config.inputs().shard) {
            Ok(h) => h,
            // --force rewrites everything, so a damaged history is not in the way: it is
            // removed, and this run's deliveries make the new one.
            Err(crate::journal::HistoryError::Manifest(e)) if delivery.force => {
                if !delivery.dry_run {
                    crate::journal::forget(sink.as_ref(), config.inputs().shard)?;
                }
                History {
                    index: Index::default(),
                    next_seq: 0,
                    warnings: vec![format!("{e}; replaced, as --force asks")],
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Plan {
            config,
            sources,
            sink,
            index: Arc::new(history.index),
            next_seq: history.next_seq,
            warnings: history.warnings,
            log,
            run_id,
            lease,
        })
    }

    /// The sink, shared.
    pub fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }

    /// The sink, as the summary names it.
    pub fn describe_sink(&self) -> String {
        self.sink.describe()
    }

    /// The producers: one per input root, one for the file list.
    pub fn producers(&self, metrics: &Arc<RunMetrics>, log: &Log) -> Vec<Producer<FileTask>> {
        // The output directory, when it is local, is never read as input.
        let walker = Walker::for_inputs(self.config.inputs(), self.sink.local_root(), metrics, log);
        walker.producers(self.sources.clone())
    }

    /// The load stage's shared state, with the memory budget.
    pub fn loader(&self, metrics: &Arc<RunMetrics>, log: &Log) -> Loader {
        let t = self.config.tuning();
        Loader {
            segment_size: t.segment_size,
            follow: self.config.inputs().follow,
            force: self.config.delivery().force,
            index: self.index.clone(),
            sink: self.sink.clone(),
            budget: Budget::new(t.memory, metrics.bytes_in_flight.clone()),
            metrics: metrics.clone(),
            task_timeout: self.config.delivery().task_timeout,
            log: log.clone(),
            dry_run: self.config.delivery().dry_run,
        }
    }

    /// The upload stage's shared state.
    pub fn uploader(&self, metrics: &Arc<RunMetrics>, log: &Log) -> Uploader {
        let d = self.config.delivery();
        Uploader::new(
            self.sink.clone(),
            self.config.tuning().level,
            d.retries,
            d.retry_backoff,
            metrics.clone(),
            log.clone(),
        )
    }

    /// Requests the sink's own client retried (S3), for the summary.
    pub fn sink_retries(&self) -> u64 {
        self.sink.client_retries()
    }

    /// Starts the journal writer for this run's deliveries.
    ///
    /// # Errors
    /// [`FerryError::Pipeline`]-like setup failure when its thread cannot start.
    pub fn journal(&self, log: &Log) -> Result<Journal, FerryError> {
        self.log.attach(log);
        Journal::start(
            self.sink.clone(),
            self.config.inputs().shard,
            self.next_seq,
            &self.run_id,
            self.config.delivery().journal_every.get(),
            log.clone(),
        )
        .map_err(|e| FerryError::Usage(format!("cannot start the journal writer: {e}")))
    }

    /// Once the run is over: saves the rest of the journal, folds it into the manifest,
    /// and returns the warnings for the summary (a torn record read at the start, a
    /// journal that could not be saved, a compaction that failed — then the journal
    /// stays, and the next run reads both, so nothing is redone).
    pub fn finish(self, journal: Journal, log: &Log) -> Vec<String> {
        let mut warnings = self.warnings;
        let saved = journal.finish();
        if let Some(e) = saved.error.filter(|_| saved.unsaved > 0) {
            warnings.push(format!(
                "could not save the journal ({e}); the next run will redo {} files",
                saved.unsaved
            ));
        }
        if let Some(n) = self.sink.requests() {
            log.debug(|| format!("[sink] {n} requests"));
        }
        drop(self.index);
        let shard = self.config.inputs().shard;
        if self.config.delivery().dry_run {
            return warnings;
        }
        if !self.lease.as_ref().is_some_and(Lease::held) {
            warnings.push(
                "this run's lease on the history was taken over (it was thought dead); its journal stays for the next run to fold in".into(),
            );
            return warnings;
        }
        if let Err(e) = compact(self.sink.as_ref(), shard, log) {
            warnings.push(format!(
                "could not fold the journal into the manifest ({e}); the next run reads both"
            ));
        }
        warnings
    }
}
