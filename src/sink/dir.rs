//! `dir:PATH` — objects as files in a local directory, made visible atomically.

use super::api::{ObjectMeta, Receipt, Sink, SinkError, SinkOptions, Upload};
use crate::words::io_words;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Temp files start with this, so they are recognisable and never mistaken for output.
pub const TEMP_PREFIX: &str = ".ferry-tmp-";

/// A local directory sink: each object is written to a temp file in its final
/// directory, then renamed into place, so a reader never sees half an object.
pub struct DirSink {
    root: PathBuf,
    /// Directories known to exist, so each is created once, not once per file. Keyed by
    /// the path's bytes: hashing a `Path` walks its components, which showed in profiles.
    made: Mutex<HashSet<OsString>>,
    opts: SinkOptions,
    seq: AtomicU64,
    pid: u32,
}

impl DirSink {
    /// Creates `root` if needed, checks it is writable, and removes temp files left by
    /// earlier runs that crashed (those whose process is gone).
    ///
    /// # Errors
    /// [`SinkError::Setup`] if the directory cannot be created or written.
    pub fn open(root: &Path, opts: SinkOptions) -> Result<Self, SinkError> {
        let setup = |cause: String| SinkError::Setup {
            target: format!("dir:{}", root.display()),
            cause,
        };
        let read_only = opts.read_only;
        let sink = DirSink {
            root: root.to_path_buf(),
            made: Mutex::new(HashSet::new()),
            opts,
            seq: AtomicU64::new(0),
            pid: std::process::id(),
        };
        if read_only {
            // Nothing created, nothing cleaned up: a missing directory reads as empty.
            return match fs::metadata(root) {
                Ok(m) if !m.is_dir() => Err(setup("not a directory".into())),
                Ok(_) => Ok(sink),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(sink),
                Err(e) => Err(setup(io_words(&e))),
            };
        }
        fs::create_dir_all(root).map_err(|e| setup(io_words(&e)))?;
        let probe = sink.temp_path(root);
        File::create(&probe).map_err(|e| setup(io_words(&e)))?;
        let _ = fs::remove_file(&probe);
        remove_stale_temps(root, TEMP_PREFIX);
        Ok(sink)
    }

    fn temp_path(&self, dir: &Path) -> PathBuf {
        let n = self.seq.fetch_add(1, Relaxed);
        dir.join(format!("{TEMP_PREFIX}{}-{n}", self.pid))
    }
}

/// Removes `<prefix><pid>-<n>` files under `root` whose process no longer runs: the temp
/// files of a crashed delivery (`.ferry-tmp-`) or restore (`.ferry-restore-`).
pub fn remove_stale_temps(root: &Path, prefix: &str) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| {
                p != std::process::id() && Path::new(&format!("/proc/{p}")).exists()
            });
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl Sink for DirSink {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn begin(&self, key: &Path, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError> {
        if self.opts.read_only {
            return Err(SinkError::Misuse("write to a sink opened read-only"));
        }
        let target = self.root.join(key);
        let dir = target.parent().unwrap_or(&self.root);
        let known = self
            .made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(dir.as_os_str());
        if !known {
            fs::create_dir_all(dir)
                .map_err(|e| SinkError::io(format!("cannot create {}", dir.display()), e))?;
            self.made
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(dir.as_os_str().to_owned());
        }
        let temp = self.temp_path(dir);
        let create = || File::options().write(true).create_new(true).open(&temp);
        let file = match create() {
            // The directory was removed behind our back since we made it: make it again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).and_then(|_| create())
            }
            r => r,
        }
        .map_err(|e| SinkError::io("cannot create output", e))?;
        Ok(Box::new(DirUpload {
            file: Some(file),
            written: 0,
            temp,
            target,
            mtime: meta.mtime,
            fsync: self.opts.fsync,
        }))
    }

    fn has(&self, key: &Path, len: u64) -> bool {
        fs::symlink_metadata(self.root.join(key)).is_ok_and(|m| m.is_file() && m.len() == len)
    }

    fn open_meta(&self, name: &str) -> Result<Option<Box<dyn Read + Send>>, SinkError> {
        match File::open(self.root.join(name)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::Setup {
                target: self.describe(),
                cause: format!("cannot read {name}: {}", io_words(&e)),
            }),
        }
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let rd = match fs::read_dir(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.opts.read_only => {
                return Ok(Vec::new())
            }
            r => r.map_err(|e| SinkError::io("cannot list", e))?,
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    fn delete_meta(&self, name: &str) -> Result<(), SinkError> {
        if self.opts.read_only {
            return Err(SinkError::Misuse("delete in a sink opened read-only"));
        }
        match fs::remove_file(self.root.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(SinkError::io(format!("cannot remove {name}"), e))
            }
            _ => Ok(()),
        }
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn open_object(&self, key: &Path) -> Result<Box<dyn Read + Send>, SinkError> {
        match File::open(self.root.join(key)) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) => Err(SinkError::io("", e)),
        }
    }
}

/// One file being written under a temp name.
struct DirUpload {
    /// `None` once committed or aborted.
    file: Option<File>,
    /// Bytes written so far.
    written: u64,
    temp: PathBuf,
    target: PathBuf,
    /// Stamped on the output, as gzip does.
    mtime: Option<std::time::SystemTime>,
    fsync: bool,
}

impl Upload for DirUpload {
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let file = self
            .file
            .as_mut()
            .ok_or(SinkError::Misuse("write after commit"))?;
        file.write_all(bytes)
            .map_err(|e| SinkError::io("write failed", e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn commit(&mut self) -> Result<Receipt, SinkError> {
        let Some(file) = self.file.take() else {
            return Err(SinkError::Misuse("committed twice"));
        };
        let finish = || -> std::io::Result<()> {
            if let Some(t) = self.mtime {
                file.set_modified(t)?;
            }
            if self.fsync {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&self.temp, &self.target)?;
            if self.fsync {
                // The rename is an entry in the directory: without this it can be lost
                // on power loss even though the file's bytes were synced.
                if let Some(dir) = self.target.parent() {
                    File::open(dir)?.sync_all()?;
                }
            }
            Ok(())
        };
        finish().map_err(|e| {
            let _ = fs::remove_file(&self.temp);
            SinkError::io("cannot finish output", e)
        })?;
        Ok(Receipt {
            bytes: self.written,
            crc32: None,
        })
    }

    fn abort(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        // Neither committed nor aborted (a panic on the way): leave nothing behind.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_appear_only_on_commit_and_abort_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let sink = DirSink::open(t.path(), SinkOptions::default()).unwrap();
        let meta = ObjectMeta {
            mtime: None,
            source_size: 0,
            deadline: None,
        };
        let mut up = sink.begin(Path::new("a/b.gz"), &meta).unwrap();
        up.write(b"hello").unwrap();
        assert!(!t.path().join("a/b.gz").exists());
        assert_eq!(up.commit().unwrap().bytes, 5);
        assert_eq!(fs::read(t.path().join("a/b.gz")).unwrap(), b"hello");
        assert!(sink.has(Path::new("a/b.gz"), 5));
        assert!(!sink.has(Path::new("a/b.gz"), 6));

        let mut up = sink.begin(Path::new("a/c.gz"), &meta).unwrap();
        up.write(b"partial").unwrap();
        up.abort();
        let names: Vec<_> = fs::read_dir(t.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b.gz"]);
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_at_open() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("x")).unwrap();
        // pid 0 is never a user process: a crashed run's leftover.
        let stale = t.path().join("x").join(format!("{TEMP_PREFIX}0-7"));
        fs::write(&stale, b"junk").unwrap();
        fs::write(t.path().join("x/keep.gz"), b"ok").unwrap();
        DirSink::open(t.path(), SinkOptions::default()).unwrap();
        assert!(!stale.exists());
        assert!(t.path().join("x/keep.gz").exists());
    }

    #[test]
    fn an_unwritable_root_is_a_setup_error() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("plain");
        fs::write(&file, b"").unwrap();
        let err = DirSink::open(&file.join("sub"), SinkOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, SinkError::Setup { .. }), "{err}");
    }
}
