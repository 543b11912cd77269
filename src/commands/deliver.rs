//! `ferry INPUT… --to SINK`: every file under the inputs loaded, gzip-compressed and
//! delivered, wired as the design's diagram draws it:
//!
//! ```text
//! producers (walk) → load → compress → upload → record (ledger) → summary, manifest
//! ```
//!
//! Opening checks the inputs before the sink is touched, then takes the history's lease,
//! reads the manifest and starts the journal; finishing folds the journal into the
//! manifest and, under `--shard`, leaves the shard's report at the sink.

use super::{execute, Command, Ended, Session, Settings};
use crate::budget::Budget;
use crate::bwlimit::BwLimit;
use crate::compress::Compressor;
use crate::config::{
    self, Config, Tuning, DEFERRED_UPLOADS_START, DEFERRING_UPLOAD_THREADS, LOCAL_UPLOADS,
    MAX_DEFERRED_UPLOADS, MAX_UPLOADS, REMOTE_UPLOADS,
};
use crate::error::FerryError;
use crate::history::journal::{compact_without, History, Journal};
use crate::history::lease::Lease;
use crate::history::manifest::{Entry, Index};
use crate::history::plans::{gone, read_list, PlanHeader};
use crate::history::shard_reports::ShardRun;
use crate::ledger::Ledger;
use crate::load::Loader;
use crate::pipeline::{CancelToken, Collected, Emitter, Limit, Pipeline, StageSpec};
use crate::shard::Shard;
use crate::sink::{self, Sink, SinkOptions};
use crate::task::{FileTask, Outcome, Packed, Segment};
use crate::upload::Uploader;
use crate::view::{Look, Summary};
use crate::walk::{Keyed, Sources, Walker};
use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs ferry: every file under the configured inputs is loaded, gzip-compressed and
/// delivered to the sink. Stops early, cleanly, when `cancel` is cancelled.
///
/// Per-file problems do not make this fail: they are counted in the returned
/// [`Summary`], whose [`Summary::exit_code`] says how the run went.
///
/// # Errors
/// [`FerryError::Usage`] for bad inputs (missing, colliding keys, bad globs),
/// [`FerryError::Sink`] or [`FerryError::Setup`] for an unusable sink or a history
/// another run holds, [`FerryError::History`] for a damaged one — all before any file is
/// read.
pub fn run(config: &Config, cancel: CancelToken) -> Result<Summary, FerryError> {
    execute(&Deliver(config), cancel)
}

/// The delivery command, over its settings.
pub struct Deliver<'c>(pub &'c Config);

/// A delivery, opened: inputs checked, sink open, lease held, history read, journal
/// started.
pub struct Opened {
    /// The inputs, checked, with their filters; the producers take them.
    sources: Option<Sources>,
    /// The open sink.
    sink: Arc<dyn Sink>,
    /// What earlier runs delivered (empty on a first run), by key hash.
    index: Arc<Index>,
    /// Problems found reading the history (torn records), for the summary.
    warnings: Vec<String>,
    /// The history's lease, held until the journal is folded (none for a dry run).
    lease: Option<Lease>,
    /// This run's deliveries, saved as it goes.
    journal: Journal,
    /// Under `--shard`: the report this shard keeps at the sink.
    shard_run: Option<(Shard, ShardRun)>,
    /// The directories the walk went through, recorded once the run is over.
    dirs: Arc<std::sync::Mutex<Vec<Entry>>>,
    /// `--delete`: the history's entries under the inputs whose sources were gone when
    /// the run began, to remove once it has ended whole.
    doomed: Vec<Entry>,
    /// `ferry watch`: the renamed files whose objects were copied (see [`super::renamed`]).
    renamed: Arc<crate::task::Renamed>,
    /// How much of the history the manifest did not hold when the run began.
    unfolded: crate::history::journal::Unfolded,
}

impl Command for Deliver<'_> {
    type Opened = Opened;
    type Collected = Collected<Ledger>;
    type Done = Summary;

    fn settings(&self) -> Settings {
        let out = self.0.output();
        Settings {
            look: Look {
                progress: out.progress,
                color: out.color,
            },
            level: out.log_level,
            timeout: self.0.delivery().timeout,
            metrics_addr: out.metrics_addr,
        }
    }

    fn open(&self, s: &Session) -> Result<Opened, FerryError> {
        let config = self.0;
        let mut opened = prepare(config, s)?;
        // A shard says at the sink that it is running, so `ferry report` can tell a shard
        // that died from one that finished.
        if let Some((shard, r)) = &opened.shard_run {
            if let Err(e) = r.write(opened.sink.as_ref(), *shard, None) {
                opened
                    .warnings
                    .push(format!("could not write the shard report: {e}"));
            }
        }
        Ok(opened)
    }

    fn build(
        &self,
        opened: &mut Opened,
        p: &mut Pipeline,
        s: &Session,
    ) -> Result<Collected<Ledger>, FerryError> {
        let (config, t) = (self.0, self.0.tuning());
        let listing = config.delivery().dry_run.then_some(config.output().listing);
        let ledger = Ledger::new(
            s.metrics.clone(),
            s.log.clone(),
            Some(opened.journal.recorder()),
        )
        .listing(listing, "send");
        // The output directory, when it is local, is never read as input.
        let mut walker = Walker::for_inputs(
            config.inputs(),
            opened.sink.local_root(),
            &s.metrics,
            &s.log,
        );
        walker.dirs = Some(opened.dirs.clone());
        let sources = (opened.sources.take())
            .ok_or_else(|| FerryError::Internal("a delivery was built twice".into()))?;
        let producers = walker.producers(sources);
        let loader = Arc::new(Loader {
            segment_size: t.segment_size,
            follow: config.inputs().follow,
            force: config.delivery().force,
            index: opened.index.clone(),
            sink: opened.sink.clone(),
            budget: Budget::new(t.memory, s.metrics.bytes_in_flight.clone()),
            metrics: s.metrics.clone(),
            task_timeout: config.delivery().task_timeout,
            log: s.log.clone(),
            dry_run: config.delivery().dry_run,
            web: config.delivery().web.clone(),
            gz_as_is: config.delivery().gz_as_is,
            renamed: opened.renamed.clone(),
        });
        let d = config.delivery();
        let uploader = Arc::new(
            Uploader::new(
                opened.sink.clone(),
                t.level,
                d.retries,
                d.retry_backoff,
                s.metrics.clone(),
                s.log.clone(),
            )
            .cache_control(d.cache_control.clone())
            .bwlimit(
                d.bwlimit
                    .and_then(|rate| BwLimit::new(rate).ok())
                    .map(Arc::new),
            ),
        );
        let limit = upload_limit(t, &opened.sink, config.delivery().dry_run);
        build(p, producers, t, ledger, loader, (uploader, limit))
    }

    fn finish(
        &self,
        mut opened: Opened,
        collected: Collected<Ledger>,
        ended: Ended,
        s: &Session,
    ) -> Result<Summary, FerryError> {
        let config = self.0;
        let sink = opened.sink.clone();
        s.metrics.retried(sink.client_retries());
        let shard_run = opened.shard_run.take();
        // Directories are recorded only for a run that ended whole: a cancelled or
        // failing one leaves them to the next, so their times describe a delivered tree
        // (and a run whose sink stopped answering asks it nothing more).
        let whole = ended.cancelled.is_none()
            && s.metrics.failed.load(std::sync::atomic::Ordering::Relaxed) == 0;
        let warnings = fold(opened, config, s, whole);
        let mut summary = Summary::build(
            &s.metrics,
            &ended.stages,
            Ledger::merge(collected.into_vec()),
            ended.cancelled,
            warnings,
            sink.describe(),
            ended.elapsed,
        );
        summary.timeline = ended.timeline;
        if config.delivery().dry_run {
            summary.mark_dry_run(&s.metrics);
        }
        if let Some((shard, r)) = shard_run {
            if let Err(e) = r
                .ended(&summary)
                .write(sink.as_ref(), shard, Some(&summary))
            {
                summary
                    .warnings
                    .push(format!("could not write the shard report: {e}"));
            }
        }
        Ok(summary)
    }
}

/// Declares the stages: walk → load → compress → upload → record.
fn build(
    p: &mut Pipeline,
    producers: Vec<crate::pipeline::Producer<FileTask>>,
    t: &Tuning,
    ledger: Ledger,
    loader: Arc<Loader>,
    (uploader, limit): (Arc<Uploader>, Option<Arc<Limit>>),
) -> Result<Collected<Ledger>, FerryError> {
    let upload = match limit {
        None => stage("upload", LOCAL_UPLOADS, t),
        Some(limit) if uploader.defers() => stage("upload", NonZeroUsize::MIN, t)
            .limit(limit)
            .threads(DEFERRING_UPLOAD_THREADS),
        Some(limit) => stage("upload", NonZeroUsize::MIN, t).limit(limit),
    };
    let level = t.level;
    let outcomes = p
        .source("walk", t.queue, producers)?
        .stage(stage("load", t.load_workers, t), move |_| {
            let loader = loader.clone();
            move |f: FileTask, out: &Emitter<Segment>| loader.load(f, out)
        })?
        .stage(stage("compress", t.jobs, t), move |_| {
            let mut c = Compressor::new(level);
            move |s: Segment, out: &Emitter<Packed>| c.handle(s, out)
        })?
        .stage(upload, move |_| {
            let up = uploader.clone();
            move |p: Packed, out: &Emitter<Outcome>| up.handle(p, out)
        })?;
    super::record(outcomes, ledger)
}

/// The upload stage's limit: `--upload-workers` if given (a fixed limit, whose threads
/// start without a rayon pool's start-up cost); else a few into a local directory (a disk
/// gains nothing from more, and a dry run sends nothing), and an adaptive limit into a
/// remote store, cut back when the store throttles. `None`: [`LOCAL_UPLOADS`] workers,
/// no gate.
fn upload_limit(t: &Tuning, sink: &Arc<dyn Sink>, dry_run: bool) -> Option<Arc<Limit>> {
    match t.upload_workers {
        Some(n) => Some(Arc::new(Limit::fixed(n.get()))),
        None if dry_run || sink.local_root().is_some() => None,
        None => {
            let (min, start) = REMOTE_UPLOADS;
            let sink = sink.clone();
            let (start, max) = match sink.commits_later() {
                true => {
                    let max = MAX_DEFERRED_UPLOADS.min(config::open_files_allowed() / 4);
                    (DEFERRED_UPLOADS_START.min(max), max)
                }
                false => (start, MAX_UPLOADS),
            };
            let (start, max) = (start.max(min), max.max(min));
            let congestion = Box::new(move || sink.throttled());
            let limit = Limit::adaptive(min, start, max, Some(congestion));
            Some(Arc::new(limit))
        }
    }
}

fn stage(name: &str, workers: NonZeroUsize, t: &Tuning) -> StageSpec {
    StageSpec::new(name, workers).queue(t.queue)
}

/// Checks the inputs, then opens the sink, takes the lease, reads the history and
/// starts the journal.
fn prepare(config: &Config, s: &Session) -> Result<Opened, FerryError> {
    let mut sources = Sources::prepare(config.inputs())?;
    let delivery = config.delivery();
    let log = s.log.clone();
    let options = SinkOptions {
        fsync: delivery.fsync,
        cancel: s.cancel.clone(),
        retry: Some((delivery.retries, delivery.retry_backoff)),
        on_event: Some(Arc::new(move |line: &str| log.debug(|| line.to_string()))),
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
        sources.keyed = Some(planned_list(sink.as_ref(), id, config, &mut sources)?);
    }
    let named = config
        .inputs()
        .only
        .clone()
        .map(|files| only(files, &sources));
    let history = read_history(sink.as_ref(), config)?;
    // --delete: decided before anything is sent, so --max-delete refuses a run whole.
    // A shipment of `ferry watch`'s settled files removes only what it saw gone.
    let scope = match (&config.inputs().only, &config.inputs().gone) {
        (_, Some(gone)) => Some(gone.as_slice()),
        (Some(_), None) => Some(&[][..]),
        (None, None) => None,
    };
    let doomed = match delivery.delete && !history.index.is_empty() && scope != Some(&[]) {
        true => doomed(sink.as_ref(), config, &sources, scope)?,
        false => Vec::new(),
    };
    // `ferry watch`'s files: taken instead of a walk (after --delete looked at the roots).
    if let Some(named) = named {
        sources.keyed = Some(named?);
        sources.roots.clear();
        sources.list = None;
    }
    if let Some(max) = delivery.max_delete.filter(|&m| doomed.len() as u64 > m) {
        return Err(FerryError::setup(format!(
            "--delete would remove {} objects whose sources are gone, more than --max-delete {max}: \
             nothing was sent or removed (is the source directory mounted?)",
            doomed.len()
        )));
    }
    let journal = Journal::start(
        sink.clone(),
        config.inputs().shard,
        history.next_seq,
        &run_id,
        delivery.journal_every.get(),
        s.log.clone(),
    )
    .map_err(|e| FerryError::setup(format!("cannot start the journal writer: {e}")))?;
    // `ferry watch`'s renamed files: their objects copied before anything is sent.
    let renamed = match (&config.inputs().only, delivery.dry_run) {
        (Some(files), false) => {
            let (gz_as_is, web) = (delivery.gz_as_is, delivery.web.as_ref());
            super::renamed::copy_renamed(
                sink.as_ref(),
                files,
                &|path, key| crate::load::form_of(path, key, gz_as_is, web),
                &journal.recorder(),
                &s.log,
            )
        }
        _ => Default::default(),
    };
    let shard_run = (config.inputs().shard)
        .filter(|_| !delivery.dry_run)
        .map(|k| (k, ShardRun::starting(k, config.inputs().plan.clone())));
    Ok(Opened {
        sources: Some(sources),
        sink,
        index: Arc::new(history.index),
        warnings: history.warnings,
        unfolded: history.unfolded,
        lease,
        journal,
        shard_run,
        dirs: Arc::default(),
        doomed,
        renamed: Arc::new(renamed),
    })
}

/// The input roots, their links resolved: a listed path is taken only under one of them.
fn resolved<'a>(
    roots: impl Iterator<Item = &'a crate::walk::Root>,
) -> Result<Vec<PathBuf>, FerryError> {
    roots
        .map(|r| {
            std::fs::canonicalize(&r.path).map_err(|e| {
                FerryError::Usage(format!(
                    "{}: {}",
                    r.path.display(),
                    crate::words::io_words(&e)
                ))
            })
        })
        .collect()
}

/// `ferry watch`'s settled files as a keyed list: only those under the inputs are taken.
fn only(files: Arc<Vec<(PathBuf, PathBuf)>>, sources: &Sources) -> Result<Keyed, FerryError> {
    let mut allowed = resolved(sources.roots.iter().map(|(r, _)| r))?;
    // And the files --files-from lists, as the list reads now.
    if let Some(list) = sources.list.as_ref().filter(|l| l.path.as_os_str() != "-") {
        let listed = crate::walk::read_list(&list.path, list.nul).map_err(|e| {
            FerryError::Usage(format!(
                "--files-from {}: {}",
                list.path.display(),
                crate::words::io_words(&e)
            ))
        })?;
        allowed.extend(listed.iter().filter_map(|p| std::fs::canonicalize(p).ok()));
    }
    let list: Vec<_> = files.iter().cloned().map(Ok).collect();
    Ok(Keyed {
        name: "the settled files".into(),
        files: Box::new(list.into_iter()),
        gone: "gone before it was shipped".into(),
        allowed,
    })
}

/// `--delete`: the current entries of this run's history that lie under one of its input
/// roots and whose source is gone (nothing at its path, not even a link). A file that a
/// filter leaves out this run is still there, so it stays; keys from `--files-from` alone
/// are under no root, and stay. With `under` (`ferry watch`), only entries at or below
/// one of its keys are looked at.
fn doomed(
    sink: &dyn Sink,
    config: &Config,
    sources: &Sources,
    under: Option<&[PathBuf]>,
) -> Result<Vec<Entry>, FerryError> {
    use std::os::unix::ffi::OsStrExt;
    let roots: Vec<_> = sources.roots.iter().map(|(r, _)| r).collect();
    let source_of = |key: &Path| -> Option<PathBuf> {
        let mut parts = key.components();
        let first = parts.next()?.as_os_str();
        let root = roots
            .iter()
            .find(|r| r.name.as_bytes() == first.as_bytes())?;
        let rest = parts.as_path();
        match (root.is_dir, rest.as_os_str().is_empty()) {
            (true, _) => Some(root.path.join(rest)),
            (false, true) => Some(root.path.clone()),
            (false, false) => None,
        }
    };
    let mut doomed = Vec::new();
    let scope = crate::history::journal::Scope::One(config.inputs().shard);
    crate::history::journal::for_each_current(sink, scope, |e| {
        let key = PathBuf::from(&e.key);
        if under.is_some_and(|keys| !keys.iter().any(|k| key.starts_with(k))) {
            return;
        }
        let gone = source_of(&key).is_some_and(|p| {
            std::fs::symlink_metadata(&p)
                .is_err_and(|err| err.kind() == std::io::ErrorKind::NotFound)
        });
        if gone {
            doomed.push(e);
        }
    })?;
    Ok(doomed)
}

/// The list of plan `id` this run takes, bounded by its INPUTs: they are not walked, and
/// only files under them are taken, whatever the list at the sink names.
fn planned_list(
    sink: &dyn Sink,
    id: &str,
    config: &Config,
    sources: &mut Sources,
) -> Result<Keyed, FerryError> {
    let allowed = resolved(std::mem::take(&mut sources.roots).iter().map(|(r, _)| r))?;
    let none = allowed.is_empty();
    // The plan and list are checked first: a wrong id or shard is the first thing to say.
    let list = planned(sink, id, config.inputs().shard, allowed)?;
    if none {
        return Err(FerryError::Usage(format!(
            "--plan {id} needs the INPUTs the plan was made from (ferry --plan {id} --shard K/N /data …): only files under them are taken, whatever the list at the sink names"
        )));
    }
    Ok(list)
}

/// What earlier runs delivered into this history. With `--force` a damaged history is
/// not in the way: it is removed, and this run's deliveries make the new one.
fn read_history(sink: &dyn Sink, config: &Config) -> Result<History, FerryError> {
    let (shard, delivery) = (config.inputs().shard, config.delivery());
    match History::read(sink, shard) {
        Ok(h) => Ok(h),
        Err(crate::history::journal::HistoryError::Manifest(e)) if delivery.force => {
            if !delivery.dry_run {
                crate::history::journal::forget(sink, shard)?;
            }
            Ok(History {
                index: Index::default(),
                next_seq: 0,
                warnings: vec![format!("{e}; replaced, as --force asks")],
                unfolded: Default::default(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Once the run is over: saves the rest of the journal, folds it into the manifest, and
/// returns the warnings for the summary (a torn record read at the start, a journal that
/// could not be saved, a compaction that failed — then the journal stays, and the next
/// run reads both, so nothing is redone).
fn fold(opened: Opened, config: &Config, s: &Session, whole: bool) -> Vec<String> {
    let Opened {
        mut warnings,
        journal,
        sink,
        index,
        lease,
        dirs,
        doomed,
        unfolded,
        ..
    } = opened;
    // The directories walked (mode, owner, times), after the files, as their entries;
    // one unchanged since the history's is not written again.
    // A dry run counts them, as the run would record them, and writes nothing.
    let dirs = std::mem::take(&mut *dirs.lock().unwrap_or_else(|e| e.into_inner()));
    let dry_run = config.delivery().dry_run;
    if dry_run || whole {
        let recorder = journal.recorder();
        for e in dirs.iter().filter(|_| !dry_run) {
            let (mtime, ctime) = ((e.mtime_s, e.mtime_ns), e.ctime.unwrap_or_default());
            let key = std::path::PathBuf::from(&e.key);
            if !(index.get(&key)).is_some_and(|d| d.bytes_out == 0 && d.same_as(0, mtime, ctime)) {
                recorder.record(e);
            }
        }
        (s.metrics.dirs).fetch_add(dirs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    let saved = journal.finish();
    let fold = unfolded.worth_folding(saved.saved, saved.segments);
    if let Some(e) = saved.error.filter(|_| saved.unsaved > 0) {
        warnings.push(format!(
            "could not save the journal ({e}); the next run will redo {} files",
            saved.unsaved
        ));
    }
    if let Some(n) = sink.requests() {
        s.log.debug(|| format!("[sink] {n} requests"));
    }
    drop(index);
    if config.delivery().dry_run {
        // Listed where the dry run lists its files, as they are.
        for e in &doomed {
            use std::io::Write;
            let line = format!(
                "would delete: {} ({}; its source is gone)",
                PathBuf::from(&e.key).display(),
                crate::words::human_bytes(e.bytes_out)
            );
            let _ = match config.output().listing {
                crate::config::Listing::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
                crate::config::Listing::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
            };
        }
        (s.metrics.deleted).fetch_add(doomed.len() as u64, std::sync::atomic::Ordering::Relaxed);
        return warnings;
    }
    if !lease.as_ref().is_some_and(Lease::held) {
        warnings.push(
            "this run's lease on the history was taken over (it was thought dead); its journal stays for the next run to fold in".into(),
        );
        return warnings;
    }
    // --delete, once the run ended whole: each object still the one recorded is removed,
    // and its entry leaves the history with the compaction.
    let gone = match whole {
        true => remove(sink.as_ref(), &doomed, s, &mut warnings),
        false => {
            if !doomed.is_empty() {
                warnings.push(format!(
                    "--delete removed nothing: the run did not end whole ({} objects' sources are gone)",
                    doomed.len()
                ));
            }
            HashSet::new()
        }
    };
    if !fold && gone.is_empty() {
        s.log.debug(|| {
            format!(
                "[manifest] journal left unfolded: {} segments, {} entries, against {} in the manifest",
                unfolded.segments + saved.segments,
                unfolded.journal + saved.saved,
                unfolded.manifest
            )
        });
    } else if let Err(e) = compact_without(sink.as_ref(), config.inputs().shard, &s.log, &gone) {
        warnings.push(format!(
            "could not fold the journal into the manifest ({e}); the next run reads both"
        ));
    }
    warnings
}

/// Removes the objects of `doomed` (and, for a web file into `dir:`, the file beside its
/// `.gz`) that are still what the history recorded; returns the keys whose entries no
/// longer stand. One that is something else now is left, with a warning.
fn remove(
    sink: &dyn Sink,
    doomed: &[Entry],
    s: &Session,
    warnings: &mut Vec<String>,
) -> HashSet<PathBuf> {
    let local = sink.local_root().is_some();
    let mut gone = HashSet::new();
    for e in doomed {
        let key = PathBuf::from(&e.key);
        let mut objects = Vec::new();
        if !e.is_link() && !e.is_dir() {
            objects.push((e.object_key(local), e.bytes_out));
            if local && e.form == Some(crate::form::Form::Gzip) {
                objects.push((key.clone(), e.size));
            }
        }
        let mut ok = true;
        for (object, size) in objects {
            match sink.delete_object(&object, size) {
                Ok(_) => s.log.info(|| format!("[deleted] {}", object.display())),
                Err(err) => {
                    ok = false;
                    warnings.push(format!("--delete: {}: {err}", object.display()));
                }
            }
        }
        if ok {
            (s.metrics.deleted).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            gone.insert(key);
        }
    }
    gone
}

/// List K of plan `id` at the sink, as the producers read it.
fn planned(
    sink: &dyn Sink,
    id: &str,
    shard: Option<crate::shard::Shard>,
    allowed: Vec<std::path::PathBuf>,
) -> Result<Keyed, FerryError> {
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
    Ok(Keyed {
        name: PlanHeader::list_name(id, shard),
        files: Box::new(files),
        gone: gone(&header).to_string(),
        allowed,
    })
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
        assert!(matches!(err, FerryError::Setup(_)), "{err:?}");
        assert_eq!(err.exit_code(), crate::ExitCode::Setup);
        let msg = err.to_string();
        assert!(msg.contains("--timeout watchdog"), "{msg}");
        assert!(msg.contains("Resource temporarily unavailable"), "{msg}");
        assert!(!out.join("src/a.gz").exists());
    }

    /// A panic outside any one file (here: a walk producer's) is an internal error, exit
    /// 70, and not a run that looks complete: files may never have been discovered. What
    /// was delivered before is still recorded in the manifest.
    #[test]
    fn a_panic_outside_any_file_is_an_internal_error() {
        let t = tempfile::tempdir().unwrap();
        let (ok, bad) = (
            t.path().join("ok"),
            t.path().join("ferry-test-panic-in-walk"),
        );
        std::fs::create_dir_all(&ok).unwrap();
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(ok.join("a"), "a\n").unwrap();
        std::fs::write(bad.join("b"), "b\n").unwrap();
        let out = t.path().join("out");
        let config = Config::builder(vec![ok, bad], SinkSpec::Dir(out.clone()))
            .build()
            .unwrap();
        let err = run(&config, CancelToken::new()).expect_err("a run that lost its walk passed");
        assert!(matches!(err, FerryError::Internal(_)), "{err:?}");
        assert_eq!(err.exit_code(), crate::ExitCode::Internal);
        assert!(err.to_string().contains("injected walk panic"), "{err}");
        assert!(out.join("ok/a.gz").exists());
        let manifest = crate::history::manifest::manifest_name(None);
        assert!(out.join(manifest).exists());
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
