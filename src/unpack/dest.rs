//! Where restored files go: only under DEST, never through a symbolic link. Every
//! directory is reached from DEST's handle (see [`crate::beneath`]), and each file is
//! written nameless and linked into place whole, so a directory swapped for a link
//! mid-run fails one file and never leads a write outside.

use crate::beneath::{Dir, KeptDirs, KeptError, Root, Temp};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The destination directory, held open.
pub struct Dest {
    root: PathBuf,
    /// DEST's handle; `None` for a dry run, which creates nothing.
    handle: Option<Root>,
    /// Whether the root held nothing when the run began: then no target is looked up
    /// before it is restored (the no-replace link still refuses to clobber).
    empty: bool,
    /// The directories files were made in last, held open.
    kept: KeptDirs,
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
    /// The destination `root`, created if missing, checked writable, and cleared of the
    /// temps that crashed restores recorded (only those).
    ///
    /// # Errors
    /// If it cannot be created, is not a directory, or cannot be written.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root)?;
        if !fs::metadata(root)?.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        let empty = fs::read_dir(root)?.next().is_none();
        let handle = Root::open_writable(root, "restore")?;
        Ok(Dest {
            root: root.to_path_buf(),
            handle: Some(handle),
            empty,
            kept: KeptDirs::default(),
        })
    }

    /// The destination `root` as it is, for a dry run: nothing is created.
    pub fn unchecked(root: &Path) -> Self {
        Dest {
            root: root.to_path_buf(),
            handle: None,
            empty: false,
            kept: KeptDirs::default(),
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

    /// The directory that `target` (from [`Dest::target`]) goes in, made as needed and
    /// held open; a symbolic link or a non-directory on the way is refused, by name.
    ///
    /// # Errors
    /// Naming the directory and why.
    pub fn parent_of(&self, target: &Path) -> Result<Dir, String> {
        self.dir_at(target.parent().unwrap_or(&self.root))
    }

    /// The directory `target` itself (from [`Dest::target`], or the root), made as needed
    /// and held open; a symbolic link or a non-directory on the way is refused, by name.
    ///
    /// # Errors
    /// Naming the directory and why.
    pub fn dir_at(&self, target: &Path) -> Result<Dir, String> {
        let Some(handle) = &self.handle else {
            return Err("a dry run writes nothing".into());
        };
        let rel = target.strip_prefix(&self.root).unwrap_or(Path::new(""));
        handle.dir(rel, Some(0o777)).map_err(|e| e.to_string())
    }

    /// A new, nameless file with permission bits `mode` (less the umask) in the directory
    /// of `target`, made as needed; the directory's handle is kept for the files after it
    /// ([`KeptDirs`]).
    ///
    /// # Errors
    /// Naming the directory and why, or the OS's words.
    pub fn temp_for(&self, target: &Path, mode: u32) -> Result<Temp, String> {
        let Some(handle) = &self.handle else {
            return Err("a dry run writes nothing".into());
        };
        let parent = target.parent().unwrap_or(&self.root);
        let rel = parent.strip_prefix(&self.root).unwrap_or(Path::new(""));
        self.kept
            .temp(handle, rel, Some(0o777), mode)
            .map_err(|e| match e {
                KeptError::Dir(e) => e.to_string(),
                KeptError::File(e) => crate::words::io_words(&e),
            })
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
        d.parent_of(&ok).unwrap();
        assert!(t.path().join("dest/a/b").is_dir());
        std::os::unix::fs::symlink(t.path(), t.path().join("dest/link")).unwrap();
        let through = d.target(Path::new("link/x")).unwrap();
        let e = d.parent_of(&through).err().unwrap();
        assert!(e.contains("is a symbolic link"), "{e}");
        assert!(!t.path().join("x").exists());
    }
}
