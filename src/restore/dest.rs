//! Where restored files go: only under DEST, never through a symbolic link, each written
//! under a temp name and renamed into place whole.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The prefix of a file being restored; the next restore removes those of dead runs.
pub const TEMP_PREFIX: &str = ".ferry-restore-";

/// The destination directory, and the directories under it already checked.
pub struct Dest {
    root: PathBuf,
    /// Directories known to be real directories under the root (not links).
    checked: Mutex<HashSet<PathBuf>>,
    seq: AtomicU64,
    /// This process's id, for temp names (asked once: `getpid` is a syscall).
    pid: u32,
    /// Whether the root held nothing when the run began: then no target is looked up
    /// before it is restored (the no-replace rename still refuses to clobber).
    empty: bool,
}

/// What is at a restore target now.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Nothing,
    /// A regular file of this size and mtime (seconds, nanoseconds).
    File(u64, (i64, u32)),
    /// Something else: a directory, a link, a device.
    Other(&'static str),
}

impl Dest {
    /// The destination `root`, created if missing.
    ///
    /// # Errors
    /// If it cannot be created or is not a directory.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        if !fs::metadata(root)?.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        let empty = fs::read_dir(root)?.next().is_none();
        Ok(Dest {
            empty,
            ..Dest::unchecked(root)
        })
    }

    /// The destination `root` as it is, for a dry run: nothing is created.
    pub fn unchecked(root: &Path) -> Self {
        Dest {
            root: root.to_path_buf(),
            checked: Mutex::new(HashSet::new()),
            seq: AtomicU64::new(0),
            pid: std::process::id(),
            empty: false,
        }
    }

    /// Whether the root held nothing when this run opened it.
    pub fn started_empty(&self) -> bool {
        self.empty
    }

    /// The target of `key` under the root.
    ///
    /// # Errors
    /// When the key could land outside the root: empty, absolute, or with `..` or `.`.
    pub fn target(&self, key: &Path) -> Result<PathBuf, String> {
        let mut rel = PathBuf::new();
        for c in key.components() {
            match c {
                Component::Normal(n) => rel.push(n),
                _ => {
                    return Err(format!(
                        "unsafe key {:?}: not a plain relative path (absolute, `..` or `.`)",
                        key.as_os_str()
                    ))
                }
            }
        }
        if rel.as_os_str().is_empty() {
            return Err("empty key".into());
        }
        Ok(self.root.join(rel))
    }

    /// Makes every directory between the root and `target`, refusing one that is a symbolic
    /// link (which could lead outside the root) or not a directory.
    ///
    /// # Errors
    /// Naming the directory and why.
    pub fn make_parents(&self, target: &Path) -> Result<(), String> {
        let parent = target.parent().unwrap_or(&self.root);
        let rel = parent.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut at = self.root.clone();
        for c in rel.components() {
            at.push(c);
            if self.is_checked(&at) {
                continue;
            }
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "{} is a symbolic link; restore never writes through one",
                        at.display()
                    ))
                }
                Ok(m) if !m.is_dir() => {
                    return Err(format!("{} is in the way: not a directory", at.display()))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs::create_dir(&at) {
                    Ok(()) => {}
                    // Another worker made it a moment ago: check what it is, next time round.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return self.make_parents(target)
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot create {}: {}",
                            at.display(),
                            crate::words::io_words(&e)
                        ))
                    }
                },
                Err(e) => return Err(format!("{}: {}", at.display(), crate::words::io_words(&e))),
            }
            self.checked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(at.clone());
        }
        Ok(())
    }

    fn is_checked(&self, dir: &Path) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(dir)
    }

    /// What is at `target` now (not following a link).
    pub fn existing(target: &Path) -> Existing {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(target) {
            Err(_) => Existing::Nothing,
            Ok(m) if m.is_file() => Existing::File(m.len(), (m.mtime(), m.mtime_nsec() as u32)),
            Ok(m) if m.is_dir() => Existing::Other("a directory"),
            Ok(m) if m.file_type().is_symlink() => Existing::Other("a symbolic link"),
            Ok(_) => Existing::Other("a special file"),
        }
    }

    /// A new, empty temp file beside `target`.
    ///
    /// # Errors
    /// If it cannot be created.
    pub fn temp_for(&self, target: &Path) -> std::io::Result<(PathBuf, File)> {
        let dir = target.parent().unwrap_or(&self.root);
        let n = self.seq.fetch_add(1, Relaxed);
        let temp = dir.join(format!("{TEMP_PREFIX}{}-{n}", self.pid));
        let f = File::options().write(true).create_new(true).open(&temp)?;
        Ok((temp, f))
    }
}

/// Renames `from` to `to` unless something is at `to`, which fails with
/// [`std::io::ErrorKind::AlreadyExists`]. Where the file system cannot promise that
/// (`renameat2` unsupported), it looks first, then renames.
///
/// # Errors
/// As `rename(2)`, or `AlreadyExists`.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_root_and_links_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = Dest::open(&t.path().join("dest")).unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../x", "./a", ""] {
            assert!(d.target(Path::new(bad)).is_err(), "{bad}");
        }
        let ok = d.target(Path::new("a/b/c.txt")).unwrap();
        assert_eq!(ok, t.path().join("dest/a/b/c.txt"));
        d.make_parents(&ok).unwrap();
        assert!(t.path().join("dest/a/b").is_dir());
        std::os::unix::fs::symlink(t.path(), t.path().join("dest/link")).unwrap();
        let through = d.target(Path::new("link/x")).unwrap();
        let e = d.make_parents(&through).unwrap_err();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(!t.path().join("x").exists());
    }

    #[test]
    fn a_no_replace_rename_refuses_an_existing_target_and_keeps_both() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::write(&a, "new").unwrap();
        fs::write(&b, "old").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }
}
