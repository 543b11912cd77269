//! Producers: walk input roots, or read a file list, and stream [`FileTask`]s into the
//! bridge channel. Filters, symlink policy and the output-inside-input guard live here.

use crate::config::Inputs;
use crate::counters::Counters;
use crate::error::{FerryError, FileError, Stage};
use crate::history::manifest::Entry;
use crate::pipeline::{Emitter, Producer};
use crate::shard::Shard;
use crate::task::{FileTask, Skip, Verdict};
use crate::view::Log;
use crate::words::io_words;
use ignore::overrides::Override;
use std::ffi::{OsStr, OsString};
use std::fs::FileType;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One input root and the name its keys start with.
#[derive(Debug, Clone)]
pub struct Root {
    /// The path as given.
    pub path: PathBuf,
    /// The root's own name (like tar): `logs` for `./logs`; keys are `name/relative`.
    pub name: OsString,
    /// Whether it is a directory (else a single file).
    pub is_dir: bool,
}

/// Checks every input exists and that no two would deliver under the same key.
///
/// # Errors
/// [`FerryError::Usage`] naming the missing input or the colliding pair.
pub fn plan_roots(inputs: &[PathBuf]) -> Result<Vec<Root>, FerryError> {
    let mut roots: Vec<Root> = Vec::new();
    for path in inputs {
        let meta = std::fs::metadata(path)
            .map_err(|e| FerryError::Usage(format!("{}: {}", path.display(), io_words(&e))))?;
        let name = match path.file_name() {
            Some(n) => n.to_os_string(),
            None => std::fs::canonicalize(path)
                .ok()
                .and_then(|p| p.file_name().map(OsStr::to_os_string))
                .unwrap_or_default(),
        };
        if let Some(other) = roots.iter().find(|r| r.name == name) {
            return Err(FerryError::Usage(format!(
                "inputs {} and {} would both be delivered under '{}'; rename one or pass its parent",
                other.path.display(),
                path.display(),
                Path::new(&name).display()
            )));
        }
        roots.push(Root {
            path: path.clone(),
            name,
            is_dir: meta.is_dir(),
        });
    }
    Ok(roots)
}

/// What the producers will read, checked before anything is touched: each input root
/// with its `--include`/`--exclude` filter, the `--files-from` list, and a planned list.
pub struct Sources {
    /// The input roots and their filters.
    pub roots: Vec<(Root, Option<Override>)>,
    /// The file list, if any.
    pub list: Option<ListSource>,
    /// Files named ahead of time with their keys (`--plan`), taken by one producer.
    pub keyed: Option<Keyed>,
}

/// Files named ahead of time with their keys (one `ferry plan` list), read as needed:
/// nothing is walked, and nothing that is not listed is taken.
pub struct Keyed {
    /// The list's name, for a line that cannot be read.
    pub name: String,
    /// Each file's path and key, or why a line could not be read.
    pub files: Box<dyn Iterator<Item = Result<(PathBuf, PathBuf), String>> + Send>,
    /// Why a listed file that is no longer there fails (says when the list was made).
    pub gone: String,
    /// The input roots this run was given, resolved: a listed path that does not resolve
    /// to a file under one of them is refused (the list is the sink's word, and whoever
    /// can write to the sink must not make a runner read any file it can).
    pub allowed: Vec<PathBuf>,
}

/// Whether `path`, its links resolved, lies under one of `roots` (resolved already);
/// `None` when it cannot be resolved (gone: the load says so).
fn resolves_under(path: &Path, roots: &[PathBuf]) -> Option<bool> {
    let real = std::fs::canonicalize(path).ok()?;
    Some(roots.iter().any(|r| real.starts_with(r)))
}

/// `--files-from`: where the list is, how it is separated, and its filter.
#[derive(Clone)]
pub struct ListSource {
    /// The list file, or `-` for stdin.
    pub path: PathBuf,
    /// Paths are NUL-separated.
    pub nul: bool,
    /// `--include` / `--exclude`, relative to the current directory.
    pub overrides: Option<Override>,
}

impl Sources {
    /// Checks every input exists, no two keys collide, every glob parses and the list
    /// can be opened.
    ///
    /// # Errors
    /// [`FerryError::Usage`] naming the input, the flag or the glob.
    pub fn prepare(inputs: &Inputs) -> Result<Self, FerryError> {
        let roots = plan_roots(&inputs.paths)?;
        if roots.is_empty() && inputs.files_from.is_none() && inputs.plan.is_none() {
            return Err(FerryError::Usage("no inputs given".into()));
        }
        let roots = roots
            .into_iter()
            .map(|r| {
                let ov = match r.is_dir {
                    true => crate::globs::overrides(&r.path, &inputs.include, &inputs.exclude)?,
                    false => None,
                };
                Ok((r, ov))
            })
            .collect::<Result<Vec<_>, FerryError>>()?;
        let list = match &inputs.files_from {
            None => None,
            Some(path) => {
                if path.as_os_str() != "-" {
                    std::fs::File::open(path).map_err(|e| {
                        FerryError::Usage(format!(
                            "--files-from {}: {}",
                            path.display(),
                            io_words(&e)
                        ))
                    })?;
                }
                Some(ListSource {
                    path: path.clone(),
                    nul: inputs.null_separated,
                    overrides: crate::globs::overrides(
                        Path::new(""),
                        &inputs.include,
                        &inputs.exclude,
                    )?,
                })
            }
        };
        Ok(Sources {
            roots,
            list,
            keyed: None,
        })
    }
}

/// One producer's walk, before the wrapper that marks discovery done.
type Part = Box<dyn FnOnce(&Emitter<FileTask>) + Send>;

/// What every producer shares.
pub struct Walker {
    /// Follow symbolic links (with loop detection).
    pub follow: bool,
    /// (device, inode) of the output directory, never read as input.
    pub skip_dir: Option<(u64, u64)>,
    /// Run counters (discovered).
    pub metrics: Arc<Counters>,
    /// For skipped entries at `-v`.
    pub log: Log,
    /// Discovery order across producers.
    pub next_id: AtomicU64,
    /// `--shard K/N`: keep only the keys of this shard.
    pub shard: Option<Shard>,
    /// `--min-size` / `--max-size`: regular files outside these bounds are left out, as
    /// an excluded path is (not discovered, not counted).
    pub sizes: SizeFilter,
    /// Where the directories walked are noted (mode, owner, times), for the history;
    /// `None` when they do not matter (a plan).
    pub dirs: Option<Arc<Mutex<Vec<Entry>>>>,
}

impl Walker {
    /// Notes the directory at `path` under `root` (mode, owner, times) for the history,
    /// where directories are recorded.
    fn note_dir(&self, root: &Root, path: &Path) {
        let Some(dirs) = &self.dirs else { return };
        if let Some(meta) = std::fs::metadata(path).ok().filter(|m| m.is_dir()) {
            let rel = path.strip_prefix(&root.path).unwrap_or(Path::new(""));
            let key: PathBuf = Path::new(&root.name)
                .components()
                .chain(rel.components())
                .collect();
            if key.as_os_str().is_empty() {
                return;
            }
            dirs.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Entry::of_dir(&key, &meta));
        }
    }

    /// The walker for `inputs` (follow, size filters, shard), never reading the local
    /// output directory `out_dir` as input. A planned run (`--plan`) takes its list as it
    /// is: the plan, not the hash, shards it.
    pub fn for_inputs(
        inputs: &Inputs,
        out_dir: Option<&Path>,
        metrics: &Arc<Counters>,
        log: &Log,
    ) -> Self {
        Walker {
            follow: inputs.follow,
            skip_dir: out_dir
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| (m.dev(), m.ino())),
            metrics: metrics.clone(),
            log: log.clone(),
            next_id: AtomicU64::new(0),
            shard: inputs.shard.filter(|_| inputs.plan.is_none()),
            sizes: SizeFilter {
                min: inputs.min_size,
                max: inputs.max_size,
            },
            dirs: None,
        }
    }
}

/// `--min-size` / `--max-size`, inclusive; unset bounds take everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct SizeFilter {
    /// Smallest size taken, in bytes.
    pub min: Option<u64>,
    /// Largest size taken, in bytes.
    pub max: Option<u64>,
}

impl SizeFilter {
    /// Whether any bound is set (then the walk needs each file's size: one stat).
    pub fn is_set(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    /// Whether a regular file of `len` bytes is left out.
    pub fn leaves_out(&self, len: u64) -> bool {
        self.min.is_some_and(|m| len < m) || self.max.is_some_and(|m| len > m)
    }

    /// Whether the regular file at `meta` is left out (`None`, unreadable: kept, so the
    /// load stage says why it cannot be read).
    fn leaves_out_meta(&self, meta: Option<std::fs::Metadata>) -> bool {
        meta.is_some_and(|m| m.is_file() && self.leaves_out(m.len()))
    }
}

/// Why an entry that is not a regular file is skipped.
pub fn special_skip(ft: &FileType) -> Skip {
    Skip::Special(if ft.is_fifo() {
        "named pipe (FIFO)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_symlink() {
        return Skip::SymlinkNotFollowed;
    } else {
        "not a regular file"
    })
}

/// A reader that sends what the producer has gathered before each read, since a read
/// from a pipe may wait for as long as its writer likes.
struct FlushFirst<'a, R> {
    reader: R,
    out: &'a Emitter<FileTask>,
}

impl<R: Read> Read for FlushFirst<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let _ = self.out.flush();
        self.reader.read(buf)
    }
}

/// What the walk decided about an entry: `None` to load it, else its verdict.
type Found = Option<Verdict>;

fn walk_failure(error: FileError) -> Found {
    Some(Verdict::failed(Stage::Walk, error))
}

impl Walker {
    fn send(&self, out: &Emitter<FileTask>, path: PathBuf, key: PathBuf, verdict: Found) -> bool {
        if self.shard.is_some_and(|s| !s.contains(&key)) {
            return true;
        }
        self.metrics.found();
        let task = FileTask {
            id: self.next_id.fetch_add(1, Relaxed),
            path,
            key,
            verdict,
        };
        out.emit(task).is_ok()
    }

    /// One producer per root and one for the list. When the last of them returns,
    /// discovery is complete and `metrics.discovery_done` is set (an ETA is meaningful).
    pub fn producers(self, sources: Sources) -> Vec<Producer<FileTask>> {
        let w = Arc::new(self);
        let mut producers: Vec<Part> = Vec::new();
        for (root, ov) in sources.roots {
            producers.push(w.root_producer(root, ov));
        }
        if let Some(l) = sources.list {
            producers.push(w.list_producer(l.path, l.nul, l.overrides));
        }
        if let Some(k) = sources.keyed {
            producers.push(w.keyed_producer(k));
        }
        let remaining = Arc::new(AtomicUsize::new(producers.len()));
        producers
            .into_iter()
            .map(|p| {
                let (remaining, w) = (remaining.clone(), w.clone());
                Box::new(move |out: &Emitter<FileTask>| {
                    p(out);
                    if remaining.fetch_sub(1, Relaxed) == 1 {
                        w.metrics.all_found();
                    }
                    // An entry the walk cannot read fails that file alone: a walk
                    // never fails as a whole.
                    Ok(())
                }) as Producer<FileTask>
            })
            .collect()
    }

    /// A producer that walks one root.
    fn root_producer(self: &Arc<Self>, root: Root, overrides: Option<Override>) -> Part {
        let w = self.clone();
        Box::new(move |out: &Emitter<FileTask>| {
            // Test builds only: a root named so makes its producer panic, outside any file.
            #[cfg(test)]
            if root.path.file_name() == Some("ferry-test-panic-in-walk".as_ref()) {
                panic!("injected walk panic");
            }
            w.walk(&root, overrides, out)
        })
    }

    fn walk(&self, root: &Root, overrides: Option<Override>, out: &Emitter<FileTask>) {
        if !root.is_dir {
            let kind = match std::fs::metadata(&root.path) {
                Ok(m) if m.is_file() && self.sizes.leaves_out(m.len()) => return,
                Ok(m) if m.is_file() => None,
                Ok(m) => Some(Verdict::Skipped(special_skip(&m.file_type()))),
                Err(e) => walk_failure(e.into()),
            };
            self.send(out, root.path.clone(), PathBuf::from(&root.name), kind);
            return;
        }
        let mut b = ignore::WalkBuilder::new(&root.path);
        b.standard_filters(false)
            .hidden(false)
            .parents(false)
            .ignore(false)
            .git_ignore(false)
            .git_global(false)
            .git_exclude(false)
            .require_git(false)
            .follow_links(self.follow)
            .sort_by_file_name(|a, b| a.cmp(b));
        if let Some(ov) = overrides {
            b.overrides(ov);
        }
        if let Some((dev, ino)) = self.skip_dir {
            b.filter_entry(move |e| {
                !(e.file_type().is_some_and(|t| t.is_dir())
                    && e.metadata().is_ok_and(|m| m.dev() == dev && m.ino() == ino))
            });
        }
        for result in b.build() {
            if out.is_cancelled() {
                return;
            }
            let (path, kind) = match result {
                Ok(entry) => {
                    let Some(ft) = entry.file_type() else {
                        continue;
                    };
                    // The root itself (possibly a link to a directory named on the command
                    // line, which is followed like `find -H`) is not an entry; it and every
                    // directory are noted for the history.
                    if ft.is_dir() || entry.depth() == 0 {
                        self.note_dir(root, entry.path());
                        continue;
                    }
                    // The type comes from the directory entry itself; no stat here,
                    // unless a size filter needs the size.
                    let kind = if ft.is_file() {
                        if self.sizes.is_set() && self.sizes.leaves_out_meta(entry.metadata().ok())
                        {
                            continue;
                        }
                        None
                    } else if ft.is_symlink() && !self.follow {
                        // Not followed: load records its text.
                        None
                    } else {
                        Some(Verdict::Skipped(special_skip(&ft)))
                    };
                    (entry.into_path(), kind)
                }
                Err(err) => match classify_walk_error(err) {
                    (Some(path), kind) => (path, kind),
                    (None, kind) => {
                        self.log.warn(|| match &kind {
                            Some(Verdict::Failed { error, .. }) => error.to_string(),
                            Some(Verdict::Skipped(skip)) => skip.to_string(),
                            _ => "walk error".to_string(),
                        });
                        continue;
                    }
                },
            };
            let rel = path.strip_prefix(&root.path).unwrap_or(&path);
            let key = Path::new(&root.name).join(rel);
            if !self.send(out, path, key, kind) {
                return;
            }
        }
    }

    /// A producer that reads paths from `source` (a file, or `-` for stdin), separated by
    /// newlines or NULs.
    fn list_producer(
        self: &Arc<Self>,
        source: PathBuf,
        nul: bool,
        overrides: Option<Override>,
    ) -> Part {
        let w = self.clone();
        Box::new(move |out: &Emitter<FileTask>| {
            let reader: Box<dyn Read> = if source.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                match std::fs::File::open(&source) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        w.log.file_error(&source, &io_words(&e));
                        return;
                    }
                }
            };
            // Reading may wait (a pipe, a terminal): what was found goes downstream first.
            let mut reader = BufReader::with_capacity(64 << 10, FlushFirst { reader, out });
            let sep = if nul { 0 } else { b'\n' };
            let mut line = Vec::new();
            // Keys taken so far: `a`, `./a` and `a//` are one key, taken once per run.
            let mut taken = std::collections::HashSet::<u128>::new();
            loop {
                line.clear();
                match reader.read_until(sep, &mut line) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) => {
                        w.log.file_error(&source, &io_words(&e));
                        return;
                    }
                }
                if line.last() == Some(&sep) {
                    line.pop();
                }
                if line.is_empty() || out.is_cancelled() {
                    continue;
                }
                let path = PathBuf::from(OsString::from_vec(line.clone()));
                if let Some(ov) = &overrides {
                    if ov.matched(&path, false).is_ignore() {
                        continue;
                    }
                }
                if let Some(key) = list_key(&path) {
                    if !taken.insert(crate::history::manifest::key_hash(&key)) {
                        w.log.warn(|| {
                            format!(
                                "{}: listed more than once (as {}); taken once",
                                crate::words::shown(&path),
                                crate::words::shown(&key)
                            )
                        });
                        continue;
                    }
                }
                if !w.send_listed(out, path) {
                    return;
                }
            }
        })
    }

    fn keyed_producer(self: &Arc<Self>, k: Keyed) -> Part {
        let w = self.clone();
        Box::new(move |out: &Emitter<FileTask>| {
            for item in k.files {
                if out.is_cancelled() {
                    return;
                }
                let sent = match item {
                    Ok((path, key)) if resolves_under(&path, &k.allowed) == Some(false) => {
                        let why = format!(
                            "not under the inputs this run was given ({}); a planned run takes only files under them",
                            k.allowed
                                .iter()
                                .map(|r| crate::words::shown(r))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        w.send(out, path, key, walk_failure(FileError::Plan(why)))
                    }
                    Ok((path, key)) => w.send_keyed(out, path, key, Some(&k.gone)),
                    Err(why) => {
                        let name = PathBuf::from(&k.name);
                        w.send(out, name.clone(), name, walk_failure(FileError::Plan(why)))
                    }
                };
                if !sent {
                    return;
                }
            }
        })
    }

    fn send_listed(&self, out: &Emitter<FileTask>, path: PathBuf) -> bool {
        let climbs = path.components().any(|c| c == Component::ParentDir);
        match list_key(&path) {
            Some(key) => self.send_keyed(out, path, key, None),
            None if climbs => {
                self.send(out, path.clone(), path, walk_failure(FileError::LeavesRoot))
            }
            // `.` or `/`: a directory, said as such (a list names files).
            None => self.send_keyed(out, path.clone(), path, None),
        }
    }

    /// Sends a named file under `key`, after one stat: a regular file goes on to be
    /// loaded; anything else is skipped or failed here. A file that is gone fails with
    /// `gone` when given (the list says when it was made).
    fn send_keyed(
        &self,
        out: &Emitter<FileTask>,
        path: PathBuf,
        key: PathBuf,
        gone: Option<&str>,
    ) -> bool {
        let meta = if self.follow {
            std::fs::metadata(&path)
        } else {
            std::fs::symlink_metadata(&path)
        };
        let kind = match meta {
            Ok(m) if m.is_file() && self.sizes.leaves_out(m.len()) => return true,
            Ok(m) if m.is_file() => None,
            Ok(m) if m.is_dir() => Some(Verdict::Skipped(Skip::Directory)),
            // A link not followed: load records its text.
            Ok(m) if m.file_type().is_symlink() => None,
            Ok(m) => Some(Verdict::Skipped(special_skip(&m.file_type()))),
            Err(e) => match gone {
                Some(g) if e.kind() == std::io::ErrorKind::NotFound => {
                    walk_failure(FileError::Plan(g.to_string()))
                }
                _ => walk_failure(e.into()),
            },
        };
        self.send(out, path, key, kind)
    }
}

/// The paths `--files-from` FILE lists (NUL-separated with `nul`), for `ferry watch`,
/// which reads the list again on SIGHUP.
///
/// # Errors
/// The list cannot be read.
pub fn read_list(list: &Path, nul: bool) -> std::io::Result<Vec<PathBuf>> {
    let bytes = std::fs::read(list)?;
    let sep = if nul { 0 } else { b'\n' };
    Ok(bytes
        .split(|&b| b == sep)
        .filter(|l| !l.is_empty())
        .map(|l| PathBuf::from(OsString::from_vec(l.to_vec())))
        .collect())
}

/// The key of a listed path: the path itself without leading `/` or `./`; `None` if it
/// climbs with `..` (it could land outside the sink).
pub fn list_key(path: &Path) -> Option<PathBuf> {
    let mut key = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => key.push(n),
            Component::ParentDir => return None,
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    (!key.as_os_str().is_empty()).then_some(key)
}

/// Turns a walk error into the path it is about and its verdict: a symlink loop is
/// skipped (its target is already being walked), anything else failed. The OS error is
/// taken from the typed chain (walkdir wraps it), never re-parsed from text.
fn classify_walk_error(err: ignore::Error) -> (Option<PathBuf>, Found) {
    let mut path = None;
    let mut e = err;
    loop {
        match e {
            ignore::Error::WithPath { path: p, err } => {
                path.get_or_insert(p);
                e = *err;
            }
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                e = *err
            }
            ignore::Error::Loop { ancestor, child } => {
                let skip = Some(Verdict::Skipped(Skip::Loop { ancestor }));
                return (Some(path.unwrap_or(child)), skip);
            }
            ignore::Error::Io(io) => return (path, walk_failure(os_error(io).into())),
            other => return (path, walk_failure(FileError::Walk(other))),
        }
    }
}

/// The OS error under a walk error: walkdir wraps its own error (whose text repeats the
/// path) in an `io::Error`; its source is the OS error itself.
fn os_error(io: std::io::Error) -> std::io::Error {
    let inner = io
        .get_ref()
        .and_then(|e| e.source())
        .and_then(|s| s.downcast_ref::<std::io::Error>());
    match inner {
        Some(os) => match os.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(os.kind(), os.to_string()),
        },
        None => io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_relative_and_never_climb() {
        assert_eq!(
            list_key(Path::new("/var/log/a.log")),
            Some("var/log/a.log".into())
        );
        assert_eq!(list_key(Path::new("./x/y")), Some("x/y".into()));
        assert_eq!(list_key(Path::new("a/../../etc")), None);
        assert_eq!(list_key(Path::new("/")), None);
    }

    #[test]
    fn colliding_root_names_are_a_usage_error() {
        let t = tempfile::tempdir().unwrap();
        for d in ["a/logs", "b/logs"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let r = plan_roots(&[t.path().join("a/logs"), t.path().join("b/logs")]);
        assert!(matches!(r, Err(FerryError::Usage(m)) if m.contains("'logs'")));
        let ok = plan_roots(&[t.path().join("a/logs"), t.path().join("b")]).unwrap();
        assert_eq!(ok[0].name, "logs");
        assert!(plan_roots(&[t.path().join("missing")]).is_err());
    }
}
