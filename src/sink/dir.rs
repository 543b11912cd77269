//! `dir:PATH` — objects as files in a local directory, made visible atomically.

use super::api::{ObjectMeta, Opened, Receipt, Sink, SinkError, SinkOptions, Upload};
use crate::beneath::{BeneathError, KeptDirs, KeptError, Root, Temp};
use crate::words::io_words;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A local directory sink: each object is written as a nameless file in its final
/// directory and linked into place whole, so a reader never sees half an object, and
/// every directory under the root is reached through handles (see [`crate::beneath`]):
/// a link swapped in mid-run never leads a write outside.
pub struct DirSink {
    root: PathBuf,
    /// The root held open; `None` for a read-only sink (nothing is written).
    handle: Option<Root>,
    opts: SinkOptions,
    /// The directories written into last, held open.
    dirs: KeptDirs,
    /// The root held open for reading objects back, opened on first read (`None` inside
    /// when it cannot be, and objects are then opened by their whole path): each object
    /// is opened relative to it, without walking the root's own path every time.
    reads: std::sync::OnceLock<Option<File>>,
}

impl DirSink {
    /// Creates `root` if needed, checks it is writable, and removes the temps that
    /// crashed runs recorded (only those, and only by their recorded inode).
    ///
    /// # Errors
    /// [`SinkError::Setup`] if the directory cannot be created or written.
    pub fn open(root: &Path, opts: SinkOptions) -> Result<Self, SinkError> {
        let setup = |cause: String| SinkError::Setup {
            target: format!("dir:{}", root.display()),
            cause,
        };
        if opts.read_only {
            // Nothing created, nothing cleaned up: a missing directory reads as empty.
            return match fs::metadata(root) {
                Ok(m) if !m.is_dir() => Err(setup("not a directory".into())),
                Ok(_) => Ok(DirSink {
                    root: root.to_path_buf(),
                    handle: None,
                    opts,
                    dirs: KeptDirs::default(),
                    reads: Default::default(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DirSink {
                    root: root.to_path_buf(),
                    handle: None,
                    opts,
                    dirs: KeptDirs::default(),
                    reads: Default::default(),
                }),
                Err(e) => Err(setup(io_words(&e))),
            };
        }
        fs::create_dir_all(root).map_err(|e| setup(io_words(&e)))?;
        let handle = Root::open_writable(root, "ferry").map_err(|e| setup(io_words(&e)))?;
        Ok(DirSink {
            root: root.to_path_buf(),
            handle: Some(handle),
            opts,
            dirs: KeptDirs::default(),
            reads: Default::default(),
        })
    }
}

/// Opens `key` (relative) for reading in the directory `dir` holds open, as
/// `File::open(root.join(key))` would: `openat(2)`, without walking the root's path.
fn open_below(dir: &File, key: &Path) -> std::io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(key.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated name relative to a directory we hold open.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn beneath_error(e: BeneathError) -> SinkError {
    match e {
        BeneathError::Io { path, source } => {
            SinkError::io(format!("cannot create {}", path.display()), source)
        }
        other => SinkError::io("", std::io::Error::other(other.to_string())),
    }
}

impl Sink for DirSink {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn begin(&self, key: &Path, meta: &ObjectMeta) -> Result<Box<dyn Upload>, SinkError> {
        let Some(handle) = &self.handle else {
            return Err(SinkError::Misuse("write to a sink opened read-only"));
        };
        let name = key
            .file_name()
            .ok_or(SinkError::Misuse("an object key with no file name"))?
            .to_owned();
        let parent = key.parent().unwrap_or(Path::new(""));
        let dir_mode = meta.dir_mode.unwrap_or(0o777);
        let new_temp = || {
            self.dirs
                .temp(handle, parent, Some(dir_mode), meta.mode.unwrap_or(0o666))
                .map_err(|e| match e {
                    KeptError::Dir(e) => beneath_error(e),
                    KeptError::File(e) => SinkError::io("cannot create output", e),
                })
        };
        let temp = new_temp()?;
        // A web file's gzip bytes (`KEY.gz`) get the file itself beside them, decoded as
        // they are written: the layout nginx `gzip_static` and Caddy serve.
        let plain = match meta.web.as_ref().is_some_and(|w| w.gzip) {
            false => None,
            true => {
                let stem = crate::form::strip_gz(&name)
                    .ok_or(SinkError::Misuse("a web object's key must end in .gz here"))?;
                let copy = new_temp()?;
                let writer = copy
                    .file
                    .try_clone()
                    .map_err(|e| SinkError::io("cannot create output", e))?;
                Some(Plain {
                    decoder: flate2::write::GzDecoder::new(writer),
                    temp: copy,
                    name: stem.to_owned(),
                })
            }
        };
        Ok(Box::new(DirUpload {
            temp: Some(temp),
            written: 0,
            name,
            mtime: meta.mtime,
            fsync: self.opts.fsync,
            plain,
        }))
    }

    fn delete_object(&self, key: &Path, size: u64) -> Result<bool, SinkError> {
        let Some(handle) = &self.handle else {
            return Err(SinkError::Misuse("delete from a sink opened read-only"));
        };
        let name = key
            .file_name()
            .ok_or(SinkError::Misuse("an object key with no file name"))?;
        // Through the root's handle, never a path a link could re-point.
        let dir = match handle.dir(key.parent().unwrap_or(Path::new("")), None) {
            Ok(d) => d,
            Err(BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(false)
            }
            Err(e) => return Err(beneath_error(e)),
        };
        match dir
            .lstat(name)
            .map_err(|e| SinkError::io("cannot look", e))?
        {
            None => Ok(false),
            Some(st) if st.st_mode & libc::S_IFMT != libc::S_IFREG => Err(SinkError::Refused(
                "not a regular file: not the object ferry stored".into(),
            )),
            Some(st) if st.st_size as u64 != size => Err(SinkError::Refused(format!(
                "{} bytes there, {size} recorded: not the object ferry stored",
                st.st_size
            ))),
            Some(_) => match dir.unlink(name) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(SinkError::io("cannot remove", e)),
            },
        }
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

    fn create_meta(&self, name: &str, bytes: &[u8]) -> Result<bool, SinkError> {
        let Some(handle) = &self.handle else {
            return Err(SinkError::Misuse("write to a sink opened read-only"));
        };
        let mut temp = handle
            .dir(Path::new(""), None)
            .map_err(beneath_error)?
            .temp(0o644)
            .map_err(|e| SinkError::io(format!("cannot create {name}"), e))?;
        temp.file
            .write_all(bytes)
            .map_err(|e| SinkError::io(format!("cannot write {name}"), e))?;
        match temp.publish(OsStr::new(name), false) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(SinkError::io(format!("cannot create {name}"), e)),
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

    fn object_size(&self, key: &Path) -> Result<Option<u64>, SinkError> {
        match fs::metadata(self.root.join(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SinkError::io("", e)),
        }
    }

    fn open_object(&self, key: &Path) -> Result<Opened, SinkError> {
        let root = self.reads.get_or_init(|| File::open(&self.root).ok());
        let opened = match root {
            Some(dir) if key.is_relative() => open_below(dir, key),
            _ => File::open(self.root.join(key)),
        };
        opened
            .map(Opened::local_file)
            .map_err(|e| SinkError::io("", e))
    }
}

/// One file being written, nameless until committed.
struct DirUpload {
    /// `None` once committed or aborted.
    temp: Option<Temp>,
    /// Bytes written so far.
    written: u64,
    /// Its name in its directory.
    name: std::ffi::OsString,
    /// Stamped on the output, as gzip does.
    mtime: Option<std::time::SystemTime>,
    fsync: bool,
    /// A web file's own bytes, decoded from the gzip bytes as they come, to publish
    /// beside them.
    plain: Option<Plain>,
}

/// The file itself beside a web file's `KEY.gz`, being decoded into a nameless file.
struct Plain {
    decoder: flate2::write::GzDecoder<File>,
    temp: Temp,
    name: std::ffi::OsString,
}

impl Upload for DirUpload {
    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let temp = self
            .temp
            .as_mut()
            .ok_or(SinkError::Misuse("write after commit"))?;
        temp.file
            .write_all(bytes)
            .map_err(|e| SinkError::io("write failed", e))?;
        if let Some(plain) = &mut self.plain {
            plain
                .decoder
                .write_all(bytes)
                .map_err(|e| SinkError::io("write failed (the file beside it)", e))?;
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn commit(&mut self) -> Result<Receipt, SinkError> {
        let Some(temp) = self.temp.take() else {
            return Err(SinkError::Misuse("committed twice"));
        };
        let plain = self.plain.take();
        let finish = || -> std::io::Result<()> {
            // The file beside a web file's gzip bytes first: its trailer checked, so
            // `KEY.gz` never stands without a whole `KEY`.
            if let Some(mut plain) = plain {
                plain.decoder.try_finish()?;
                if let Some(t) = self.mtime {
                    plain.temp.file.set_modified(t)?;
                }
                if self.fsync {
                    plain.temp.file.sync_all()?;
                }
                plain.temp.publish(&plain.name, true)?;
            }
            if let Some(t) = self.mtime {
                temp.file.set_modified(t)?;
            }
            if self.fsync {
                temp.file.sync_all()?;
            }
            temp.publish(OsStr::new(&self.name), true)?;
            if self.fsync {
                // The link is an entry in the directory: without this it can be lost
                // on power loss even though the file's bytes were synced.
                temp.sync_dir()?;
            }
            Ok(())
        };
        finish().map_err(|e| SinkError::io("cannot finish output", e))?;
        Ok(Receipt {
            bytes: self.written,
            crc32: None,
            etag: None,
        })
    }

    fn abort(&mut self) {
        // A nameless file vanishes when closed (a named fallback is removed by its drop).
        self.temp.take();
        self.plain.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_appear_only_on_commit_and_abort_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let sink = DirSink::open(t.path(), SinkOptions::default()).unwrap();
        let meta = ObjectMeta::default();
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
    fn look_alike_temp_names_are_never_removed_at_open() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("x")).unwrap();
        // Names a crashed run of an older ferry would have left: now a user's files.
        for n in [
            "x/.ferry-tmp-0-7",
            "x/.ferry-tmp-999999-0",
            "x/.ferry-tmp-x",
        ] {
            fs::write(t.path().join(n), b"mine").unwrap();
        }
        DirSink::open(t.path(), SinkOptions::default()).unwrap();
        for n in [
            "x/.ferry-tmp-0-7",
            "x/.ferry-tmp-999999-0",
            "x/.ferry-tmp-x",
        ] {
            assert_eq!(fs::read(t.path().join(n)).unwrap(), b"mine", "{n}");
        }
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
