//! A run, prepared: every check of the user's input done before the sink is touched, then
//! the sink opened and its manifest read. The [`Plan`] builds the stage workers from that.

use crate::budget::Budget;
use crate::config::Config;
use crate::error::FerryError;
use crate::load::Loader;
use crate::manifest::{manifest_name, Entry, Manifest};
use crate::metrics::RunMetrics;
use crate::pipeline::{CancelToken, Producer};
use crate::report::Log;
use crate::sink::{self, Sink, SinkOptions};
use crate::task::FileTask;
use crate::upload::Uploader;
use crate::walk::{Sources, Walker};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Everything a run needs before its first file is read.
pub struct Plan<'c> {
    config: &'c Config,
    /// The inputs, checked, with their filters.
    sources: Sources,
    /// The open sink.
    sink: Arc<dyn Sink>,
    /// What earlier runs delivered (empty on a first run).
    manifest: Arc<Manifest>,
}

impl<'c> Plan<'c> {
    /// Checks the inputs, then opens the sink and reads its manifest.
    ///
    /// # Errors
    /// [`FerryError::Usage`] for bad inputs or an unreadable manifest (unless `--force`),
    /// [`FerryError::Sink`] for an unusable sink.
    pub fn prepare(config: &'c Config, cancel: &CancelToken) -> Result<Self, FerryError> {
        let sources = Sources::prepare(config.inputs())?;
        let delivery = config.delivery();
        let options = SinkOptions {
            fsync: delivery.fsync,
            cancel: cancel.clone(),
        };
        let sink = sink::open(&delivery.sink, &options)?;
        let manifest = match sink.read_meta(&manifest_name(config.inputs().shard))? {
            Some(bytes) => match Manifest::from_bytes(&bytes) {
                Ok(m) => m,
                Err(_) if delivery.force => Manifest::default(),
                Err(e) => return Err(FerryError::Usage(e.to_string())),
            },
            None => Manifest::default(),
        };
        Ok(Plan {
            config,
            sources,
            sink,
            manifest: Arc::new(manifest),
        })
    }

    /// The sink, as the summary names it.
    pub fn describe_sink(&self) -> String {
        self.sink.describe()
    }

    /// The producers: one per input root, one for the file list.
    pub fn producers(&self, metrics: &Arc<RunMetrics>, log: &Log) -> Vec<Producer<FileTask>> {
        let inputs = self.config.inputs();
        // The output directory, when it is local, is never read as input.
        let skip_dir = self
            .sink
            .local_root()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()));
        let walker = Walker {
            follow: inputs.follow,
            skip_dir,
            metrics: metrics.clone(),
            log: log.clone(),
            next_id: AtomicU64::new(0),
            shard: inputs.shard,
        };
        walker.producers(self.sources.clone())
    }

    /// The load stage's shared state, with the memory budget.
    pub fn loader(&self, metrics: &Arc<RunMetrics>, log: &Log) -> Loader {
        let t = self.config.tuning();
        Loader {
            segment_size: t.segment_size,
            follow: self.config.inputs().follow,
            force: self.config.delivery().force,
            manifest: self.manifest.clone(),
            sink: self.sink.clone(),
            budget: Budget::new(t.memory, metrics.bytes_in_flight.clone()),
            metrics: metrics.clone(),
            task_timeout: self.config.delivery().task_timeout,
            log: log.clone(),
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

    /// Adds this run's deliveries to the manifest and saves it at the sink.
    ///
    /// # Errors
    /// A warning for the summary when it cannot be saved.
    pub fn save_manifest(self, records: Vec<Entry>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let mut m = Arc::try_unwrap(self.manifest).unwrap_or_else(|a| (*a).clone());
        for r in records {
            m.insert(r);
        }
        let name = manifest_name(self.config.inputs().shard);
        self.sink.write_meta(&name, &m.to_bytes()).map_err(|e| {
            format!("could not save the manifest ({e}); the next run will redo these files")
        })
    }
}
