//! `ferry restore --from SINK DEST`: brings a delivered tree back, on the same engine as
//! a delivery, run backwards (the stages are in [`crate::unpack`]):
//!
//! ```text
//! manifest (or listing) → fetch (--download-workers) → inflate (-j) → record
//! ```

use super::{execute, Command, Ended, Session, Settings};
use crate::budget::Budget;
use crate::config::Listing;
use crate::error::FerryError;
use crate::ledger::Ledger;
use crate::pipeline::{CancelToken, Collected, Emitter, Pipeline, StageSpec};
use crate::shard::Shard;
use crate::sink::{self, Sink, SinkOptions, SinkSpec};
use crate::task::Outcome;
use crate::unpack::{self, Dest, Restorer, Small, Wanted, Work};
use crate::view::Summary;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `ferry restore` is asked to do.
#[derive(Debug, Clone)]
pub struct Restore {
    /// The sink to read from.
    pub from: SinkSpec,
    /// The directory to restore into.
    pub dest: PathBuf,
    /// `--include` globs, on keys.
    pub include: Vec<String>,
    /// `--exclude` globs, on keys.
    pub exclude: Vec<String>,
    /// `--shard K/N`: that shard's manifest, or the keys of that shard.
    pub shard: Option<Shard>,
    /// Decide and list only.
    pub dry_run: bool,
    /// Overwrite files that exist and differ.
    pub force: bool,
    /// `--no-perms`: files take the umask's bits instead of their recorded ones.
    pub no_perms: bool,
    /// `--no-same-owner`: files stay owned by the user who restores, even root.
    pub no_same_owner: bool,
    /// Objects fetched at once; `None`: the cores for a local sink, 8 for an object store.
    pub download_workers: Option<NonZeroUsize>,
    /// Segments inflated at once.
    pub jobs: NonZeroUsize,
    /// Most compressed and inflated bytes held at once.
    pub memory: u64,
    /// Where a dry run lists its files.
    pub listing: Listing,
    /// How it shows itself and when it gives up.
    pub settings: Settings,
}

impl Restore {
    /// Restoring `from` into `dest` with the defaults of the CLI.
    pub fn new(from: SinkSpec, dest: PathBuf) -> Self {
        let cores = crate::config::cores();
        Restore {
            from,
            dest,
            include: Vec::new(),
            exclude: Vec::new(),
            shard: None,
            dry_run: false,
            force: false,
            no_perms: false,
            no_same_owner: false,
            download_workers: None,
            jobs: cores,
            memory: (8 * cores.get() as u64) << 20,
            listing: Listing::Stdout,
            settings: Settings::default(),
        }
    }
}

/// Restores every file the sink's manifest (or, without one, its listing) names, under
/// `dest`, and returns the summary (totals as for a delivery: every file ends restored,
/// skipped, failed or cancelled).
///
/// # Errors
/// [`FerryError::Sink`] when the sink cannot be opened or read, [`FerryError::History`]
/// when its manifest is damaged, [`FerryError::Usage`] for a bad glob or a sink with
/// nothing to restore, [`FerryError::Setup`] for a destination that cannot be made.
pub fn restore(r: &Restore, cancel: CancelToken) -> Result<Summary, FerryError> {
    execute(r, cancel)
}

/// A restore, opened: the sink, DEST, and the key filter.
pub struct Opened {
    sink: Arc<dyn Sink>,
    restorer: Option<Restorer>,
    filter: Option<ignore::overrides::Override>,
    /// The restorer, once the pipeline holds it: its DEST for the directories.
    running: Option<Arc<Restorer>>,
    /// The directories the history records, set once the files are in.
    dirs: Arc<std::sync::Mutex<Vec<crate::history::manifest::Entry>>>,
}

impl Command for Restore {
    type Opened = Opened;
    type Collected = Collected<Ledger>;
    type Done = Summary;

    fn settings(&self) -> Settings {
        self.settings
    }

    fn open(&self, s: &Session) -> Result<Opened, FerryError> {
        let filter = crate::globs::overrides(Path::new(""), &self.include, &self.exclude)?;
        let options = SinkOptions {
            read_only: true,
            cancel: s.cancel.clone(),
            ..SinkOptions::default()
        };
        let sink = sink::open(&self.from, &options)?;
        let dest = match self.dry_run {
            // A dry run creates nothing, not even DEST.
            true => Dest::unchecked(&self.dest),
            false => Dest::open(&self.dest).map_err(|e| {
                FerryError::setup(format!(
                    "cannot restore into {}: {}",
                    self.dest.display(),
                    crate::words::io_words(&e)
                ))
            })?,
        };
        let restorer = Restorer {
            sink: sink.clone(),
            dest,
            force: self.force,
            keep_modes: !self.no_perms,
            // Only root may give a file away, as tar assumes.
            // SAFETY: geteuid has no preconditions and cannot fail.
            keep_owners: !self.no_same_owner && unsafe { libc::geteuid() } == 0,
            dry_run: self.dry_run,
            budget: Budget::new(self.memory, s.metrics.bytes_in_flight.clone()),
            metrics: s.metrics.clone(),
            log: s.log.clone(),
        };
        Ok(Opened {
            sink,
            restorer: Some(restorer),
            filter,
            running: None,
            dirs: Arc::default(),
        })
    }

    fn build(
        &self,
        opened: &mut Opened,
        p: &mut Pipeline,
        s: &Session,
    ) -> Result<Collected<Ledger>, FerryError> {
        let download_workers = self
            .download_workers
            .unwrap_or(match opened.sink.local_root() {
                Some(_) => crate::config::cores(),
                None => NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            });
        let restorer = Arc::new(
            (opened.restorer.take())
                .ok_or_else(|| FerryError::Internal("a restore was built twice".into()))?,
        );
        let wanted = unpack::wanted(
            opened.sink.clone(),
            self.shard,
            opened.filter.take(),
            s.metrics.clone(),
            opened.dirs.clone(),
        );
        opened.running = Some(restorer.clone());
        let ledger = Ledger::new(s.metrics.clone(), s.log.clone(), None)
            .listing(self.dry_run.then_some(self.listing), "restore");
        let (fetcher, inflater) = (restorer.clone(), restorer);
        Ok(p.source(
            "manifest",
            NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            vec![wanted],
        )?
        .stage(StageSpec::new("fetch", download_workers), move |_| {
            let r = fetcher.clone();
            let mut small = Small::default();
            move |ws: Vec<Wanted>, out: &Emitter<Work>| r.fetch_batch(ws, &mut small, out)
        })?
        .stage(StageSpec::new("inflate", self.jobs), move |_| {
            let r = inflater.clone();
            let mut engine = crate::inflate::SegmentInflater::default();
            move |w: Work, out: &Emitter<Vec<Outcome>>| r.inflate(w, &mut engine, out)
        })?
        .collect(
            "record",
            NonZeroUsize::MIN,
            move |_| ledger.clone(),
            |l: &mut Ledger, os: Vec<Outcome>| os.into_iter().for_each(|o| l.record(o)),
        )?)
    }

    fn finish(
        &self,
        opened: Opened,
        collected: Collected<Ledger>,
        ended: Ended,
        s: &Session,
    ) -> Result<Summary, FerryError> {
        // The directories, after every file (not after a cancel: the tree is not whole).
        let dirs = std::mem::take(&mut *opened.dirs.lock().unwrap_or_else(|e| e.into_inner()));
        let mut warnings = Vec::new();
        if self.dry_run {
            // Counted, as the restore would make and set them.
            s.metrics
                .dirs
                .fetch_add(dirs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        } else if let (Some(r), None) = (&opened.running, ended.cancelled) {
            warnings = r
                .apply_dirs(dirs)
                .into_iter()
                .map(|p| format!("directory not set: {p}"))
                .collect();
        }
        let mut summary = Summary::build(
            &s.metrics,
            &ended.stages,
            Ledger::merge(collected.into_vec()),
            ended.cancelled,
            warnings,
            format!("{} → {}", opened.sink.describe(), self.dest.display()),
            ended.elapsed,
        );
        summary.timeline = ended.timeline;
        if self.dry_run {
            summary.mark_dry_run(&s.metrics);
        }
        Ok(summary)
    }
}
