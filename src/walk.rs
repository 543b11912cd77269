//! Producers: walk input roots, or read a file list, and stream [`FileTask`]s into the
//! bridge channel. Filters, symlink policy and the output-inside-input guard live here.

use crate::error::{io_words, FerryError};
use crate::metrics::RunMetrics;
use crate::pipeline::{Emitter, Producer};
use crate::report::Log;
use crate::task::{EntryKind, FileTask};
use ignore::overrides::{Override, OverrideBuilder};
use std::ffi::{OsStr, OsString};
use std::fs::FileType;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

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

/// Builds the `--include` / `--exclude` matcher for paths under `base` (gitignore
/// syntax; the last matching glob wins). `None` when there are no globs.
///
/// # Errors
/// [`FerryError::Usage`] naming the flag of a glob that does not parse.
pub fn overrides(
    base: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Option<Override>, FerryError> {
    if include.is_empty() && exclude.is_empty() {
        return Ok(None);
    }
    let mut b = OverrideBuilder::new(base);
    let bad =
        |flag: &str, g: &str, e: ignore::Error| FerryError::Usage(format!("--{flag} '{g}': {e}"));
    for g in include {
        b.add(g).map_err(|e| bad("include", g, e))?;
    }
    for g in exclude {
        b.add(&format!("!{g}")).map_err(|e| bad("exclude", g, e))?;
    }
    b.build()
        .map(Some)
        .map_err(|e| FerryError::Usage(e.to_string()))
}

/// What every producer shares.
pub struct Walker {
    /// Follow symbolic links (with loop detection).
    pub follow: bool,
    /// (device, inode) of the output directory, never read as input.
    pub skip_dir: Option<(u64, u64)>,
    /// Run counters (discovered).
    pub metrics: Arc<RunMetrics>,
    /// For skipped entries at `-v`.
    pub log: Log,
    /// Discovery order across producers.
    pub next_id: AtomicU64,
    /// `--shard K/N`: keep only keys whose [`shard_of`] is K.
    pub shard: Option<(u64, u64)>,
}

/// The shard of a key: FNV-1a (64-bit) of the key's bytes — input root name plus relative
/// path, as delivered without `.gz` — modulo `n`. Stable across runs, machines and versions.
pub fn shard_of(key: &Path, n: u64) -> u64 {
    let h = key
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    h % n
}

fn special_kind(ft: &FileType) -> &'static str {
    if ft.is_fifo() {
        "named pipe (FIFO)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_symlink() {
        "symbolic link (not followed)"
    } else {
        "not a regular file"
    }
}

impl Walker {
    fn send(&self, out: &Emitter<FileTask>, path: PathBuf, key: PathBuf, kind: EntryKind) -> bool {
        if let Some((k, n)) = self.shard {
            if shard_of(&key, n) != k {
                return true;
            }
        }
        self.metrics.discovered.fetch_add(1, Relaxed);
        let task = FileTask {
            id: self.next_id.fetch_add(1, Relaxed),
            path,
            key,
            kind,
        };
        out.emit(task).is_ok()
    }

    /// A producer that walks one root.
    pub fn root_producer(
        self: &Arc<Self>,
        root: Root,
        overrides: Option<Override>,
    ) -> Producer<FileTask> {
        let w = self.clone();
        Box::new(move |out: &Emitter<FileTask>| w.walk(&root, overrides, out))
    }

    fn walk(&self, root: &Root, overrides: Option<Override>, out: &Emitter<FileTask>) {
        if !root.is_dir {
            let kind = match std::fs::metadata(&root.path) {
                Ok(m) if m.is_file() => EntryKind::Regular,
                Ok(m) => EntryKind::Skip(special_kind(&m.file_type()).into()),
                Err(e) => EntryKind::Fail(io_words(&e)),
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
                    // line, which is followed like `find -H`) is not an entry.
                    if ft.is_dir() || entry.depth() == 0 {
                        continue;
                    }
                    // The type comes from the directory entry itself; no stat here.
                    let kind = if ft.is_file() {
                        EntryKind::Regular
                    } else {
                        EntryKind::Skip(special_kind(&ft).into())
                    };
                    (entry.into_path(), kind)
                }
                Err(err) => {
                    let (path, kind) = classify_walk_error(&err);
                    let Some(path) = path else {
                        self.log.warn(|| err.to_string());
                        continue;
                    };
                    (path, kind)
                }
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
    pub fn list_producer(
        self: &Arc<Self>,
        source: PathBuf,
        nul: bool,
        overrides: Option<Override>,
    ) -> Producer<FileTask> {
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
            let mut reader = BufReader::new(reader);
            let sep = if nul { 0 } else { b'\n' };
            let mut line = Vec::new();
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
                if !w.send_listed(out, path) {
                    return;
                }
            }
        })
    }

    fn send_listed(&self, out: &Emitter<FileTask>, path: PathBuf) -> bool {
        let Some(key) = list_key(&path) else {
            let kind = EntryKind::Fail("path leaves its directory ('..'); not delivered".into());
            return self.send(out, path.clone(), path, kind);
        };
        let meta = if self.follow {
            std::fs::metadata(&path)
        } else {
            std::fs::symlink_metadata(&path)
        };
        let kind = match meta {
            Ok(m) if m.is_file() => EntryKind::Regular,
            Ok(m) if m.is_dir() => EntryKind::Skip("is a directory".into()),
            Ok(m) => EntryKind::Skip(special_kind(&m.file_type()).into()),
            Err(e) => EntryKind::Fail(io_words(&e)),
        };
        self.send(out, path, key, kind)
    }
}

/// The key of a listed path: the path itself without leading `/` or `./`; `None` if it
/// climbs with `..` (it could land outside the sink).
fn list_key(path: &Path) -> Option<PathBuf> {
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

/// Turns a walk error into the path it is about and what to count it as: a symlink loop is
/// skipped (its target is already being walked), anything else failed.
fn classify_walk_error(err: &ignore::Error) -> (Option<PathBuf>, EntryKind) {
    let mut path = None;
    let mut e = err;
    loop {
        match e {
            ignore::Error::WithPath { path: p, err } => {
                path.get_or_insert_with(|| p.clone());
                e = err;
            }
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                e = err
            }
            ignore::Error::Loop { ancestor, child } => {
                let kind = EntryKind::Skip(format!(
                    "symbolic link loop (points to ancestor {})",
                    ancestor.display()
                ));
                return (Some(path.unwrap_or_else(|| child.clone())), kind);
            }
            ignore::Error::Io(io) => {
                let words = if io.kind() == std::io::ErrorKind::NotFound {
                    // Gone between listing and opening: removed, or a link to nowhere.
                    "no such file or directory".to_string()
                } else if io.kind() == std::io::ErrorKind::PermissionDenied {
                    "permission denied".to_string()
                } else {
                    // walkdir wraps the OS error in "IO error for operation on PATH: cause".
                    let text = io_words(io);
                    match text.rsplit_once(": ") {
                        Some((_, cause)) => io_words(&std::io::Error::other(cause.to_string())),
                        None => text,
                    }
                };
                return (path, EntryKind::Fail(words));
            }
            other => return (path, EntryKind::Fail(other.to_string())),
        }
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
    fn shards_are_stable_and_cover_every_key() {
        // Pinned values: changing the hash would re-deal every existing sharded job.
        assert_eq!(
            shard_of(Path::new("logs/a.log"), u64::MAX),
            8_076_973_849_331_553_842
        );
        assert_eq!(shard_of(Path::new("logs/a.log"), 1_000_003), 698_396);
        assert_eq!(shard_of(Path::new(""), u64::MAX), 0xcbf2_9ce4_8422_2325);
        let mut counts = [0; 4];
        for i in 0..4000 {
            counts[shard_of(Path::new(&format!("d/f{i}")), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
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
