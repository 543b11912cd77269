//! `ferry watch INPUT… --to SINK`: runs beside production until stopped. It ships
//! everything new or changed once at the start (what changed while it was down), then
//! learns of files from the OS (inotify, through the `notify` crate) and ships each one
//! once it has settled: no change in size or mtime for `--settle`. A rescan every
//! `--rescan`, or when the kernel says it dropped events, walks everything again.
//!
//! Each shipment is an ordinary delivery ([`super::deliver`]) of the settled files, named
//! with the keys a full run gives them, so the history's rerun rules hold: an unchanged
//! file is skipped, a file changed after it was shipped is shipped again under its key.
//! The first SIGTERM or Ctrl-C lets the shipment under way finish, then ends with 0; a
//! second one quits at once.

use super::deliver::Deliver;
use crate::config::Config;
use crate::counters::Counters;
use crate::error::{ExitCode, FerryError};
use crate::pipeline::{CancelToken, StageMetrics};
use crate::view::Summary;
use crate::walk::{plan_roots, Root};
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `ferry watch`: the delivery's settings, and when a file counts as settled.
pub struct Watch {
    /// What a run of the same flags would do, for every shipment.
    pub config: Config,
    /// A file is shipped once its size and mtime have held this long.
    pub settle: Duration,
    /// Everything is walked again this often.
    pub rescan: Duration,
    /// `-q`: only errors.
    pub quiet: bool,
    /// `--delete`: a file gone for `--settle` has its object removed.
    pub delete: bool,
    /// SIGHUP: the selection read again (`--files-from`, `--exclude-from`, the globs).
    pub reload: Option<Reload>,
}

/// Reads the selection again, for SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<crate::config::Inputs, FerryError> + Send + Sync>;

/// What `--metrics-addr` serves of a watch: the shipments' counters added up, the one
/// under way (or the last) live with its stages, and the files waiting to settle.
#[derive(Default)]
struct Served {
    /// Finished shipments' counters, added up.
    done: Counters,
    /// The shipment under way, or the last: its stages and counters.
    now: Mutex<(Vec<Arc<StageMetrics>>, Arc<Counters>)>,
    /// Files seen changing, waiting to settle.
    settling: AtomicU64,
    /// Shipments so far (the start-up one and rescans included).
    shipments: AtomicU64,
}

impl Served {
    /// The page a scrape gets.
    fn render(&self, started: Instant) -> String {
        let (stages, now) = self.now.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sum = Counters::default();
        sum.absorb(&self.done);
        sum.absorb(&now);
        crate::view::exporter::render(
            &stages,
            &sum,
            started,
            &[
                (
                    "watch_files_settling",
                    "Files seen changing, waiting to settle before they are shipped",
                    self.settling.load(Relaxed) as f64,
                ),
                (
                    "watch_shipments",
                    "Deliveries so far: the start-up one, rescans and settled files",
                    self.shipments.load(Relaxed) as f64,
                ),
            ],
        )
    }
}

/// A file seen changing, waiting to settle.
struct Pending {
    /// Its size and mtime when last seen.
    seen: (u64, (i64, i64)),
    /// When they last changed.
    since: Instant,
}

impl Watch {
    /// Runs until SIGTERM or Ctrl-C; then `Ok(ExitCode::Success)` unless a shipment's
    /// setup failed (the sink gone, the history damaged), which ends it with that error.
    ///
    /// # Errors
    /// The inputs cannot be watched, or a shipment could not start.
    pub fn run(&self) -> Result<ExitCode, FerryError> {
        let stop = CancelToken::new();
        // Ctrl-C and SIGTERM stop it; SIGHUP reads the file list and the filters again.
        let hups = crate::interrupt::watch_signals(&stop)
            .map_err(|e| FerryError::setup(format!("cannot take signals: {e}")))?;
        crate::interrupt::ignore_file_size_signal();
        let mut config = self.config.clone();
        let mut roots = Scope::of(&config)?;
        let (tx, events) = crossbeam_channel::unbounded();
        let mut watcher = notify::recommended_watcher(move |e| {
            let _ = tx.send(e);
        })
        .map_err(|e| FerryError::setup(format!("cannot watch the inputs: {e}")))?;
        roots.watch(&mut watcher, None)?;
        // --metrics-addr: one endpoint for the whole watch, bound before anything starts.
        let served = Arc::new(Served::default());
        let _exporter = match self.config.output().metrics_addr {
            None => None,
            Some(addr) => {
                let listener = crate::view::exporter::bind(addr).map_err(|e| {
                    FerryError::setup(format!(
                        "--metrics-addr {addr}: {}",
                        crate::words::io_words(&e)
                    ))
                })?;
                let (page, started) = (served.clone(), Instant::now());
                let ex = crate::view::exporter::Exporter::start(
                    listener,
                    Arc::new(move || page.render(started)),
                )
                .map_err(|e| FerryError::setup(format!("--metrics-addr: {e}")))?;
                self.say(format_args!(
                    "watch: metrics at http://{}/metrics",
                    ex.addr()
                ));
                Some(ex)
            }
        };
        // What changed while ferry was down (or everything, the first time).
        self.ship(&config, None, None, &served)?;
        self.say(format_args!(
            "watch: watching {}; a file is shipped once unchanged for {:?}",
            roots.said(),
            self.settle
        ));
        let tick = (self.settle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
        // --delete: paths seen gone, and since when; removed once gone for --settle.
        let mut gone: HashMap<PathBuf, Instant> = HashMap::new();
        let mut next_scan = Instant::now() + self.rescan;
        while !stop.is_cancelled() {
            let mut rescan = false;
            crossbeam_channel::select! {
                recv(events) -> e => match e {
                    Ok(Ok(event)) => {
                        rescan |= event.need_rescan();
                        // Reads (ferry's own among them) change nothing.
                        if changes(&event.kind) {
                            for path in event.paths {
                                self.saw(&path, &roots, &mut pending, &mut gone);
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        self.say(format_args!("watch: the OS's events failed ({e}); walking everything again"));
                        rescan = true;
                    }
                    Err(_) => break,
                },
                recv(stop.signal()) -> _ => break,
                recv(hups) -> _ => match self.reloaded(&config, &roots, &mut watcher) {
                    Some((c, r)) => {
                        (config, roots) = (c, r);
                        rescan = true;
                    }
                    None => continue,
                },
                default(tick) => {}
            }
            if rescan || Instant::now() >= next_scan {
                pending.clear();
                gone.clear();
                served.settling.store(0, Relaxed);
                self.ship(&config, None, None, &served)?;
                next_scan = Instant::now() + self.rescan;
                continue;
            }
            let settled = self.settled(&mut pending, &roots);
            let removed = self.removed(&mut gone, &roots);
            served.settling.store(pending.len() as u64, Relaxed);
            if !settled.is_empty() || !removed.is_empty() {
                self.ship(&config, Some(settled), Some(removed), &served)?;
            }
        }
        Ok(ExitCode::Success)
    }

    /// SIGHUP: the selection read again and the watches moved to match, said in a line;
    /// `None` (the old one kept, and why said) when it cannot be read.
    fn reloaded(
        &self,
        config: &Config,
        old: &Scope,
        watcher: &mut impl Watcher,
    ) -> Option<(Config, Scope)> {
        let mut read = || -> Result<(Config, Scope), FerryError> {
            let reload = (self.reload.as_ref())
                .ok_or_else(|| FerryError::Usage("nothing to read again".into()))?;
            let config = config.clone().with_inputs(reload()?);
            let scope = Scope::of(&config)?;
            scope.watch(watcher, Some(old))?;
            Ok((config, scope))
        };
        match read() {
            Ok((config, scope)) => {
                self.say(format_args!(
                    "watch: SIGHUP: the file list and filters read again; watching {}",
                    scope.said()
                ));
                Some((config, scope))
            }
            Err(e) => {
                eprintln!("ferry: watch: SIGHUP: {e}; going on as before");
                None
            }
        }
    }

    /// Notes that `path` changed (a file, or a directory whose files are all new), or,
    /// with `--delete`, that it is gone (a file, or a directory and all below it).
    fn saw(
        &self,
        path: &Path,
        roots: &Scope,
        pending: &mut HashMap<PathBuf, Pending>,
        gone: &mut HashMap<PathBuf, Instant>,
    ) {
        let m = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                pending.remove(path);
                if self.delete
                    && e.kind() == std::io::ErrorKind::NotFound
                    && key_of(path, roots).is_some()
                {
                    gone.entry(path.to_path_buf()).or_insert_with(Instant::now);
                }
                return;
            }
        };
        gone.remove(path);
        if m.is_dir() {
            // A directory made or moved in: its files may predate the watch on it.
            for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
                self.saw(&e.path(), roots, pending, gone);
            }
            return;
        }
        if !m.is_file() || !key_of(path, roots).is_some_and(|(_, taken)| taken) {
            return;
        }
        let seen = (m.len(), (m.mtime(), m.mtime_nsec()));
        match pending.get_mut(path) {
            Some(p) if p.seen == seen => {}
            Some(p) => {
                p.seen = seen;
                p.since = Instant::now();
            }
            None => {
                pending.insert(
                    path.to_path_buf(),
                    Pending {
                        seen,
                        since: Instant::now(),
                    },
                );
            }
        }
    }

    /// Takes out of `pending` the files unchanged for `--settle`, with their keys; a file
    /// that changed since it was last seen starts its wait again.
    fn settled(
        &self,
        pending: &mut HashMap<PathBuf, Pending>,
        roots: &Scope,
    ) -> Vec<(PathBuf, PathBuf)> {
        let now = Instant::now();
        let mut ready = Vec::new();
        pending.retain(|path, p| {
            if now.duration_since(p.since) < self.settle {
                return true;
            }
            let Ok(m) = std::fs::symlink_metadata(path) else {
                return false; // gone before it settled
            };
            let seen = (m.len(), (m.mtime(), m.mtime_nsec()));
            if seen != p.seen {
                p.seen = seen;
                p.since = now;
                return true;
            }
            if let Some((key, _)) = key_of(path, roots) {
                ready.push((path.clone(), key));
            }
            false
        });
        ready
    }

    /// With `--delete`: takes out of `gone` the paths gone for `--settle` and still gone,
    /// as keys; one that came back meanwhile is dropped.
    fn removed(&self, gone: &mut HashMap<PathBuf, Instant>, roots: &Scope) -> Vec<PathBuf> {
        let now = Instant::now();
        let mut keys = Vec::new();
        gone.retain(|path, since| {
            if now.duration_since(*since) < self.settle {
                return true;
            }
            let still = std::fs::symlink_metadata(path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
            if let Some((key, _)) = key_of(path, roots).filter(|_| still) {
                keys.push(key);
            }
            false
        });
        keys
    }

    /// One delivery: of `files` (path and key), or of everything under the inputs; with
    /// `--delete`, removing the objects of the keys `gone` (all whose sources are gone, for
    /// everything). Its outcome is said in a line (its failures by name); a setup error
    /// ends the watch.
    fn ship(
        &self,
        config: &Config,
        files: Option<Vec<(PathBuf, PathBuf)>>,
        gone: Option<Vec<PathBuf>>,
        served: &Served,
    ) -> Result<(), FerryError> {
        let config = config.clone().serving_no_metrics();
        let config = match &files {
            None => config,
            Some(list) => config.only(Arc::new(list.clone())),
        };
        let config = match gone {
            Some(keys) if self.delete => config.gone(Arc::new(keys)),
            _ => config,
        };
        let now = |stages: &[Arc<StageMetrics>], m: &Arc<Counters>| {
            *served.now.lock().unwrap_or_else(|e| e.into_inner()) = (stages.to_vec(), m.clone());
        };
        // Its own token: a first SIGTERM lets it finish.
        let shipped = super::execute_observed(&Deliver(&config), CancelToken::new(), &now);
        {
            let mut now = served.now.lock().unwrap_or_else(|e| e.into_inner());
            served.done.absorb(&now.1);
            now.1 = Arc::default();
        }
        served.shipments.fetch_add(1, Relaxed);
        self.said(&shipped?, files.is_none());
        Ok(())
    }

    /// Says how a delivery went: one line, and its failures.
    fn said(&self, s: &Summary, scan: bool) {
        let t = &s.totals;
        if t.succeeded + t.failed + t.deleted > 0 || scan {
            self.say(format_args!(
                "watch: {}{} shipped, {} unchanged, {} failed{}",
                if scan { "scan: " } else { "" },
                t.succeeded,
                t.skipped,
                t.failed,
                match self.delete {
                    true => format!(", {} deleted", t.deleted),
                    false => String::new(),
                }
            ));
        }
        for f in &s.failures {
            eprintln!("ferry: {}: {}", crate::words::escaped(&f.path), f.error);
        }
    }

    fn say(&self, line: std::fmt::Arguments) {
        if !self.quiet {
            eprintln!("ferry: {line}");
        }
    }
}

/// Whether an event of `kind` may mean a file's content or name changed: not an open,
/// a read or a close after reading (which ferry's own shipments cause).
fn changes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// An input root being watched, with its path resolved once (the OS names paths as it
/// resolved them) and the selection's globs for the files below it.
struct Watched {
    root: Root,
    resolved: Option<PathBuf>,
    globs: Option<ignore::overrides::Override>,
}

/// What a watch looks at: the input roots, and the files `--files-from` lists (each
/// watched through its directory, as logrotate replaces a file by a new one).
struct Scope {
    roots: Vec<Watched>,
    /// Listed files: absolute path → key (as a run keys a listed path).
    listed: HashMap<PathBuf, PathBuf>,
    /// The directories of the listed files that no input root watches already.
    dirs: std::collections::BTreeSet<PathBuf>,
}

impl Scope {
    /// The inputs of `config`, to watch.
    fn of(config: &Config) -> Result<Scope, FerryError> {
        let inputs = config.inputs();
        let roots = plan_roots(&inputs.paths)?
            .into_iter()
            .map(|root| {
                let globs = match root.is_dir {
                    true => crate::globs::overrides(&root.path, &inputs.include, &inputs.exclude)?,
                    false => None,
                };
                Ok(Watched {
                    resolved: std::fs::canonicalize(&root.path).ok(),
                    root,
                    globs,
                })
            })
            .collect::<Result<Vec<_>, FerryError>>()?;
        let mut listed = HashMap::new();
        if let Some(list) = &inputs.files_from {
            if list.as_os_str() == "-" {
                return Err(FerryError::Usage(
                    "ferry watch --files-from needs a file, not stdin: it is read again on SIGHUP"
                        .into(),
                ));
            }
            let globs = crate::globs::overrides(Path::new(""), &inputs.include, &inputs.exclude)?;
            let paths = crate::walk::read_list(list, inputs.null_separated).map_err(|e| {
                FerryError::Usage(format!(
                    "--files-from {}: {}",
                    list.display(),
                    crate::words::io_words(&e)
                ))
            })?;
            for path in paths {
                if globs
                    .as_ref()
                    .is_some_and(|g| g.matched(&path, false).is_ignore())
                {
                    continue;
                }
                let (Some(key), Ok(abs)) =
                    (crate::walk::list_key(&path), std::path::absolute(&path))
                else {
                    continue;
                };
                listed.insert(abs, key);
            }
        }
        let covered = |dir: &Path| {
            roots
                .iter()
                .any(|w| w.root.is_dir && dir.starts_with(&w.root.path))
        };
        let dirs = listed
            .keys()
            .filter_map(|p| p.parent())
            .filter(|d| !covered(d))
            .map(Path::to_path_buf)
            .collect();
        Ok(Scope {
            roots,
            listed,
            dirs,
        })
    }

    /// Starts watching what this scope needs that `old` did not, and stops what `old`
    /// watched that it does not need (the input roots are the same on a reload).
    fn watch(&self, watcher: &mut impl Watcher, old: Option<&Scope>) -> Result<(), FerryError> {
        let cannot = |p: &Path, e: notify::Error| {
            FerryError::setup(format!("cannot watch {}: {e}", p.display()))
        };
        if old.is_none() {
            for Watched { root: r, .. } in &self.roots {
                let mode = match r.is_dir {
                    true => RecursiveMode::Recursive,
                    false => RecursiveMode::NonRecursive,
                };
                watcher
                    .watch(&r.path, mode)
                    .map_err(|e| cannot(&r.path, e))?;
            }
        }
        let before = old.map(|o| &o.dirs);
        for dir in &self.dirs {
            if !before.is_some_and(|b| b.contains(dir)) {
                // A listed file whose directory is not there yet is found by a rescan.
                if dir.is_dir() {
                    watcher
                        .watch(dir, RecursiveMode::NonRecursive)
                        .map_err(|e| cannot(dir, e))?;
                }
            }
        }
        for dir in before.into_iter().flatten() {
            if !self.dirs.contains(dir) {
                let _ = watcher.unwatch(dir);
            }
        }
        Ok(())
    }

    /// "2 inputs and 3 listed files", for the watch's lines.
    fn said(&self) -> String {
        let n = self.roots.len();
        let mut s = format!("{n} input{}", if n == 1 { "" } else { "s" });
        if !self.listed.is_empty() {
            let m = self.listed.len();
            s += &format!(" and {m} listed file{}", if m == 1 { "" } else { "s" });
        }
        s
    }
}

/// The key a full run gives `path` (its root's name, then the path below the root, the
/// root matched as given and as resolved; or its key as a listed file), and whether the
/// selection's globs take it as a walk would (a file in an excluded directory is left out
/// with it).
fn key_of(path: &Path, scope: &Scope) -> Option<(PathBuf, bool)> {
    let under_root = scope.roots.iter().find_map(|w| {
        let r = &w.root;
        [Some(&r.path), w.resolved.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|root| match r.is_dir {
                true => path.strip_prefix(root).ok().map(|rest| {
                    let taken = w
                        .globs
                        .as_ref()
                        .is_none_or(|g| crate::globs::admits(g, rest));
                    (Path::new(&r.name).join(rest), taken)
                }),
                false => (path == root).then(|| (PathBuf::from(&r.name), true)),
            })
    });
    under_root.or_else(|| scope.listed.get(path).map(|key| (key.clone(), true)))
}
