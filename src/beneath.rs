//! Writing under a directory that a user controls, only through handles ferry holds.
//!
//! A path is checked and then used: between the two, anyone with write access can swap a
//! directory for a symbolic link, and a write by path then lands wherever the link points.
//! So nothing here writes by path. Every directory below a [`Root`] is opened from the
//! root's handle without following a link (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`, or one `openat(O_NOFOLLOW)` per component where the kernel lacks
//! it), and files are created, linked, renamed and stat'ed relative to that directory's
//! handle. A directory swapped mid-run makes one file fail; it never leads outside.
//!
//! Files are born without a name (`O_TMPFILE`) and linked into place whole, so a crash
//! leaves nothing to clean up, and nothing is ever deleted because its name looks like
//! ferry's. Where a name is unavoidable (a file system without `O_TMPFILE`, or the moment
//! between linking and renaming over an older file), the temp's inode is first written to
//! the run's record at the root; the next run removes a leftover only when the record's
//! owner is dead and the name still holds that very inode.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// Why a directory under the root could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    /// A component is a symbolic link: followed, it could lead outside the root. The
    /// second field names who refuses (`ferry`, `restore`).
    #[error("{} is a symbolic link; {} never writes through one", .0.display(), .1)]
    Link(PathBuf, &'static str),
    /// A component exists and is not a directory.
    #[error("{} is in the way: not a directory", .0.display())]
    NotDir(PathBuf),
    /// The relative path is not plain (absolute, `..`, `.`).
    #[error("unsafe name {0:?}: not a plain relative path (absolute, `..` or `.`)")]
    Unsafe(PathBuf),
    /// The OS refused.
    #[error("{}: {}", .path.display(), crate::words::io_words(.source))]
    Io {
        /// The directory concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Why [`KeptDirs::temp`] made no file: the directory could not be reached (or made)
/// beneath the root, or the file could not be created in it.
#[derive(Debug)]
pub enum KeptError {
    /// Resolving (or making) the directory failed.
    Dir(BeneathError),
    /// Creating the file in it failed.
    File(io::Error),
}

/// How many directory handles a [`KeptDirs`] keeps.
const DIRS_KEPT: usize = 8;

/// The handles of the last few directories files were made in, newest first: files come
/// a directory at a time (walk order, key order), so each saves resolving its directory
/// beneath the root again, two of a small file's dozen system calls. Shared by the `dir:`
/// sink and restore's DEST.
///
/// A kept directory removed since (a nameless file in it is refused with EPERM, a named
/// one with ENOENT) is resolved again, beneath the root, which also refuses a link put in
/// its place. One *moved* elsewhere still receives files through its handle: moving it
/// took write access to both places, and the same window exists for each single file.
#[derive(Default)]
pub struct KeptDirs {
    dirs: Mutex<VecDeque<(PathBuf, Arc<Dir>)>>,
}

impl KeptDirs {
    /// A new nameless file with permission bits `mode` in the directory `rel` below
    /// `root` (made as [`Root::dir`] makes it, with `create`), through a kept handle when
    /// there is one.
    ///
    /// # Errors
    /// [`KeptError`]: which of the two steps failed, and why.
    pub fn temp(
        &self,
        root: &Root,
        rel: &Path,
        create: Option<u32>,
        mode: u32,
    ) -> Result<Temp, KeptError> {
        let lock = || self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        let kept = lock()
            .iter()
            .find(|(p, _)| p == rel)
            .map(|(_, d)| d.clone());
        if let Some(dir) = kept {
            match dir.temp(mode) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EPERM)) => {}
                other => return other.map_err(KeptError::File),
            }
        }
        let dir = Arc::new(root.dir(rel, create).map_err(KeptError::Dir)?);
        let temp = dir.temp(mode).map_err(KeptError::File)?;
        let mut dirs = lock();
        dirs.retain(|(p, _)| p != rel);
        dirs.push_front((rel.to_path_buf(), dir));
        dirs.truncate(DIRS_KEPT);
        Ok(temp)
    }
}

/// Tri-state for a kernel feature found out on first use.
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// The first line of a temp record; the record's own inode number follows it, so a copy
/// or a look-alike of the file is never taken for one.
const RECORD_MAGIC: &str = "ferry temp record 1";
/// Where a record's name starts (what follows is the run's id). Finding a candidate by
/// this prefix is only a start: it is taken as ferry's only when its content names its
/// own inode and no live run holds its lock.
const RECORD_PREFIX: &str = ".ferry-temps-";

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

struct Shared {
    root: OwnedFd,
    path: PathBuf,
    /// Who writes, for messages (`ferry`, `restore`).
    who: &'static str,
    openat2: AtomicU8,
    tmpfile: AtomicU8,
    empty_path: AtomicU8,
    id: String,
    seq: AtomicU64,
    /// The record of named temps, made on first need.
    record: Mutex<Option<File>>,
    /// The record's name, once made (removed when the root is dropped).
    record_made: AtomicBool,
}

/// A directory ferry writes under, held open: everything below it is reached from this
/// handle, never by a path that could be re-pointed.
#[derive(Clone)]
pub struct Root(Arc<Shared>);

/// A directory below a [`Root`], held open.
pub struct Dir {
    /// Shared with the temps made in it: no `dup` per file.
    fd: Arc<OwnedFd>,
    /// What files are born with here, learned on first asking: shared with its temps.
    births: Arc<OnceLock<Option<Births>>>,
    root: Root,
    /// The directory as a path, for messages only.
    path: PathBuf,
}

/// What of a new file's owner and permission bits a directory decides, learned once per
/// handle (one `fstat` and one `fgetxattr`), so a restore need not set them again.
#[derive(Clone, Copy, Debug)]
struct Births {
    /// The directory's group.
    gid: u32,
    /// Whether it is setgid, so its files take its group.
    setgid: bool,
    /// Whether it has a default ACL, which decides new files' bits instead of the umask.
    default_acl: bool,
}

/// What a new file is born with, where that is certain: a restore then skips the
/// `fchown` or `fchmod` that would only repeat it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Born {
    /// Its owner (uid, gid).
    pub owner: Option<(u32, u32)>,
    /// Its permission bits (never setuid, setgid or sticky).
    pub mode: Option<u32>,
}

/// The process's umask, read once from `/proc/self/status` (reading it with `umask(2)`
/// would change it for a moment under other threads); `None` where it cannot be read.
fn umask() -> Option<u32> {
    static UMASK: OnceLock<Option<u32>> = OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

impl Births {
    /// What `dir` gives its new files; `None` if it cannot be asked.
    fn of(dir: &OwnedFd) -> Option<Births> {
        // SAFETY: stat is plain data, filled in by the call.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a descriptor we hold; `st` is writable.
        if unsafe { libc::fstat(dir.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        // SAFETY: a NUL-terminated name; a null buffer of size 0 only asks the size.
        let r = unsafe {
            libc::fgetxattr(
                dir.as_raw_fd(),
                c"system.posix_acl_default".as_ptr(),
                std::ptr::null_mut(),
                0,
            )
        };
        let default_acl = match r {
            n if n >= 0 => true,
            _ => !matches!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::ENODATA | libc::EOPNOTSUPP)
            ),
        };
        Some(Births {
            gid: st.st_gid,
            setgid: st.st_mode & libc::S_ISGID != 0,
            default_acl,
        })
    }

    /// What a file made here by this process with `mode` asked is born with.
    fn born(self, mode: u32) -> Born {
        // ferry never changes its ids, so they are asked once.
        static IDS: OnceLock<(u32, u32)> = OnceLock::new();
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = *IDS.get_or_init(|| unsafe { (libc::geteuid(), libc::getegid()) });
        // The group is the process's, or the directory's when it is setgid (or the file
        // system is mounted `grpid`): certain when the two agree, or when it is setgid.
        let owner = match self.gid == gid || self.setgid {
            true => Some((uid, self.gid)),
            false => None,
        };
        let mode = match self.default_acl {
            true => None,
            false => umask().map(|u| mode & 0o777 & !u),
        };
        Born { owner, mode }
    }
}

impl Root {
    /// Opens `path` (which the user named, so a link there is followed) as a root that
    /// will be written: checks that it can be, with a nameless probe that leaves nothing
    /// behind whatever happens, and removes the temps dead runs recorded there. `who`
    /// names the writer in messages (`ferry`, `restore`).
    ///
    /// # Errors
    /// If it cannot be opened as a directory or written.
    pub fn open_writable(path: &Path, who: &'static str) -> io::Result<Root> {
        let root = Root::open(path, who)?;
        root.dir(Path::new(""), None)
            .map_err(io::Error::other)?
            .temp(0o600)?;
        root.sweep();
        Ok(root)
    }

    /// Opens `path` (which the user named, so a link there is followed) as a root; `who`
    /// names the writer in messages.
    ///
    /// # Errors
    /// If it cannot be opened as a directory.
    pub fn open(path: &Path, who: &'static str) -> io::Result<Root> {
        let c = cstr(path.as_os_str())?;
        // SAFETY: a NUL-terminated path; the fd returned is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(last_err());
        }
        Ok(Root(Arc::new(Shared {
            // SAFETY: `fd` is a new descriptor nothing else owns.
            root: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
            who,
            openat2: AtomicU8::new(UNKNOWN),
            tmpfile: AtomicU8::new(UNKNOWN),
            empty_path: AtomicU8::new(UNKNOWN),
            id: crate::ident::unique_id(),
            seq: AtomicU64::new(0),
            record: Mutex::new(None),
            record_made: AtomicBool::new(false),
        })))
    }

    /// The directory `rel` below the root, made (each missing component with `mode`,
    /// before the umask) when `create` is set. No component is followed if it is a link.
    ///
    /// # Errors
    /// [`BeneathError`], naming the component that is a link, not a directory, or missing.
    pub fn dir(&self, rel: &Path, create: Option<u32>) -> Result<Dir, BeneathError> {
        let mut plain = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => plain.push(n),
                _ => return Err(BeneathError::Unsafe(rel.to_path_buf())),
            }
        }
        let path = self.0.path.join(&plain);
        if plain.as_os_str().is_empty() {
            let fd = dup(&self.0.root).map_err(|source| BeneathError::Io {
                path: path.clone(),
                source,
            })?;
            return Ok(self.wrap(fd, path));
        }
        if self.0.openat2.load(Relaxed) != NO {
            match openat2_beneath(&self.0.root, plain.as_os_str()) {
                Ok(fd) => {
                    self.0.openat2.store(YES, Relaxed);
                    return Ok(self.wrap(fd, path));
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSYS | libc::EPERM | libc::E2BIG)
                    ) =>
                {
                    self.0.openat2.store(NO, Relaxed);
                }
                // Missing (to be made), a link or not a directory (to be named): walk it.
                Err(_) => {}
            }
        }
        self.walk(&plain, create)
    }

    fn wrap(&self, fd: OwnedFd, path: PathBuf) -> Dir {
        Dir {
            fd: Arc::new(fd),
            births: Arc::default(),
            root: self.clone(),
            path,
        }
    }

    /// One component at a time, each opened with `O_NOFOLLOW` from its parent's handle.
    fn walk(&self, plain: &Path, create: Option<u32>) -> Result<Dir, BeneathError> {
        let io = |path: &Path, source| BeneathError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut at = self.0.path.clone();
        let mut cur = dup(&self.0.root).map_err(|e| io(&at, e))?;
        for c in plain.components() {
            let name = c.as_os_str();
            at.push(name);
            let cname = cstr(name).map_err(|e| io(&at, e))?;
            let mut tries = 0;
            cur = loop {
                tries += 1;
                match open_dir_at(&cur, &cname) {
                    Ok(fd) => break fd,
                    Err(e)
                        if e.raw_os_error() == Some(libc::ENOENT)
                            && create.is_some()
                            && tries < 4 =>
                    {
                        // SAFETY: a NUL-terminated name relative to a directory we hold.
                        let r = unsafe {
                            libc::mkdirat(cur.as_raw_fd(), cname.as_ptr(), create.unwrap_or(0o777))
                        };
                        if r != 0 {
                            let e = last_err();
                            // Another worker made it a moment ago: open it next time round.
                            if e.raw_os_error() != Some(libc::EEXIST) {
                                return Err(io(&at, e));
                            }
                        }
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                        return Err(match lstat_at(&cur, &cname) {
                            Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                                BeneathError::Link(at, self.0.who)
                            }
                            _ => BeneathError::NotDir(at),
                        });
                    }
                    Err(e) => return Err(io(&at, e)),
                }
            };
        }
        Ok(self.wrap(cur, at))
    }

    /// Appends a named temp to this run's record (made on first need, locked while the run
    /// lives) before the name is used for anything else.
    fn note(&self, dir: &Dir, name: &OsStr, ino: u64) -> io::Result<()> {
        let mut rec = self.0.record.lock().unwrap_or_else(|e| e.into_inner());
        if rec.is_none() {
            let rname = format!("{RECORD_PREFIX}{}", self.0.id);
            let c = cstr(OsStr::new(&rname))?;
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            let mut f = File::from(open_at(&self.0.root, &c, flags, 0o600)?);
            // SAFETY: flock on a descriptor we own; held until it is closed.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            self.0.record_made.store(true, Relaxed);
            let own = f.metadata()?.ino();
            writeln!(f, "{RECORD_MAGIC} {own}")?;
            *rec = Some(f);
        }
        let rel = dir.path.strip_prefix(&self.0.path).unwrap_or(Path::new(""));
        let line = format!(
            "{ino} {} {}\n",
            hex(rel.as_os_str().as_bytes()),
            hex(name.as_bytes())
        );
        match rec.as_mut() {
            Some(f) => f.write_all(line.as_bytes()),
            None => Ok(()),
        }
    }

    /// Removes the temps that dead runs left, as their records list them: each only if
    /// the name still holds the recorded inode. A record is a dead run's when no live
    /// process holds its lock, and ferry's when its first line names its own inode.
    /// Returns how many temps were removed.
    pub fn sweep(&self) -> usize {
        let Ok(rd) = std::fs::read_dir(&self.0.path) else {
            return 0;
        };
        let mut removed = 0;
        for entry in rd.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(RECORD_PREFIX.as_bytes())
                || name.to_str().is_some_and(|n| n.ends_with(&self.0.id))
            {
                continue;
            }
            removed += self.sweep_record(&name).unwrap_or(0);
        }
        removed
    }

    fn sweep_record(&self, name: &OsStr) -> io::Result<usize> {
        let c = cstr(name)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let mut f = File::from(open_at(&self.0.root, &c, flags, 0)?);
        let meta = f.metadata()?;
        if !meta.is_file() || meta.len() > 64 << 20 {
            return Ok(0);
        }
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(0); // its run is alive
        }
        let mut text = String::new();
        if f.read_to_string(&mut text).is_err() {
            return Ok(0);
        }
        let mut lines = text.lines();
        if lines.next() != Some(&format!("{RECORD_MAGIC} {}", meta.ino())) {
            return Ok(0); // not one of ours
        }
        let mut removed = 0;
        for line in lines {
            let mut parts = line.split(' ');
            let (Some(ino), Some(dir), Some(tmp)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(ino), Some(dir), Some(tmp)) = (ino.parse::<u64>(), unhex(dir), unhex(tmp))
            else {
                continue;
            };
            let Ok(d) = self.dir(Path::new(&OsString::from_vec(dir)), None) else {
                continue;
            };
            let tmp = OsString::from_vec(tmp);
            if let Ok(Some(st)) = d.lstat(&tmp) {
                if st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && st.st_ino == ino
                    && st.st_nlink == 1
                {
                    removed += usize::from(d.unlink(&tmp).is_ok());
                }
            }
        }
        drop(f);
        let _ = unlink_at(&self.0.root, name);
        Ok(removed)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Every temp of this run is linked or removed by now: the record has served.
        if self.record_made.load(Relaxed) {
            let _ = unlink_at(
                &self.root,
                OsStr::new(&format!("{RECORD_PREFIX}{}", self.id)),
            );
        }
    }
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn dup(fd: &OwnedFd) -> io::Result<OwnedFd> {
    fd.try_clone()
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`, as an owned descriptor.
fn open_at(dir: &OwnedFd, name: &std::ffi::CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name relative to a directory we hold; `mode` is only read
    // with O_CREAT or O_TMPFILE.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_at(dir: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

fn openat2_beneath(root: &OwnedFd, rel: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(rel)?;
    // SAFETY: open_how is plain data; zeroed is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the path is NUL-terminated, `how` lives across the call and its size is given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn lstat_at(dir: &OwnedFd, name: &CString) -> io::Result<Option<libc::stat>> {
    // SAFETY: stat is plain data, filled in by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated name relative to a directory we hold; `st` is writable.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = last_err();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(None),
        _ => Err(e),
    }
}

fn unlink_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: a NUL-terminated name relative to a directory we hold.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
        return Err(last_err());
    }
    Ok(())
}

fn rename_at(dir: &OwnedFd, from: &CString, to: &CString, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: NUL-terminated names relative to a directory we hold.
    let r = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            from.as_ptr(),
            dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

impl Dir {
    /// What is at `name` in this directory, not following a link (`None`: nothing).
    ///
    /// # Errors
    /// As `fstatat(2)`, apart from a missing name.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<libc::stat>> {
        lstat_at(&self.fd, &cstr(name)?)
    }

    /// Removes the file `name` in this directory.
    ///
    /// # Errors
    /// As `unlinkat(2)`.
    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        unlink_at(&self.fd, name)
    }

    /// Makes `name` in this directory a symbolic link holding `target`, as given
    /// (dangling, absolute or climbing out: a link is text, never followed here), and
    /// gives it `owner` and `mtime` where asked, on the link itself.
    ///
    /// # Errors
    /// As `symlinkat(2)` (`AlreadyExists` when the name is taken), `fchownat(2)` and
    /// `utimensat(2)`.
    pub fn symlink(
        &self,
        name: &OsStr,
        target: &OsStr,
        owner: Option<(u32, u32)>,
        mtime: Option<(i64, u32)>,
    ) -> io::Result<()> {
        let (n, t) = (cstr(name)?, cstr(target)?);
        // SAFETY: NUL-terminated names; the link is made relative to a directory we hold.
        if unsafe { libc::symlinkat(t.as_ptr(), self.fd.as_raw_fd(), n.as_ptr()) } != 0 {
            return Err(last_err());
        }
        if let Some((uid, gid)) = owner {
            // SAFETY: as above; AT_SYMLINK_NOFOLLOW changes the link, not what it names.
            let r = unsafe {
                libc::fchownat(
                    self.fd.as_raw_fd(),
                    n.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 {
                return Err(last_err());
            }
        }
        if let Some((s, ns)) = mtime {
            let t = libc::timespec {
                tv_sec: s,
                tv_nsec: i64::from(ns),
            };
            let times = [t, t];
            // SAFETY: as above; two timespecs (atime, mtime), for the link itself.
            let r = unsafe {
                libc::utimensat(
                    self.fd.as_raw_fd(),
                    n.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 {
                return Err(last_err());
            }
        }
        Ok(())
    }

    /// Gives this directory `owner`, then permission bits `mode`, then `mtime` (its
    /// access time too), through its handle: what a restore does once the directory's
    /// contents are in, so a 0500 directory still receives them.
    ///
    /// # Errors
    /// As `fchown(2)`, `fchmod(2)` and `futimens(2)`.
    pub fn stamp(
        &self,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
        mtime: Option<(i64, u32)>,
    ) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: calls on a descriptor we hold, with plain values.
        unsafe {
            if let Some((uid, gid)) = owner {
                if libc::fchown(fd, uid, gid) != 0 {
                    return Err(last_err());
                }
            }
            if let Some(m) = mode {
                if libc::fchmod(fd, m as libc::mode_t) != 0 {
                    return Err(last_err());
                }
            }
            if let Some((s, ns)) = mtime {
                let t = libc::timespec {
                    tv_sec: s,
                    tv_nsec: i64::from(ns),
                };
                if libc::futimens(fd, [t, t].as_ptr()) != 0 {
                    return Err(last_err());
                }
            }
        }
        Ok(())
    }

    /// The text of the symbolic link `name` in this directory, `None` if it is not one.
    ///
    /// # Errors
    /// As `readlinkat(2)`, apart from a name that is not a link.
    pub fn read_link(&self, name: &OsStr) -> io::Result<Option<std::ffi::OsString>> {
        let n = cstr(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: a NUL-terminated name relative to a directory we hold; `buf` is as long
        // as said.
        let r = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r < 0 {
            let e = last_err();
            return match e.raw_os_error() {
                Some(libc::EINVAL | libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        buf.truncate(r as usize);
        Ok(Some(std::ffi::OsString::from_vec(buf)))
    }

    /// A new, empty file in this directory with permission bits `mode` (before the umask),
    /// with no name until [`Temp::publish`] gives it one.
    ///
    /// # Errors
    /// If it cannot be created.
    pub fn temp(&self, mode: u32) -> io::Result<Temp> {
        let shared = &self.root.0;
        if shared.tmpfile.load(Relaxed) != NO {
            match open_at(&self.fd, c".", libc::O_TMPFILE | libc::O_WRONLY, mode) {
                Ok(fd) => {
                    shared.tmpfile.store(YES, Relaxed);
                    return Ok(Temp {
                        file: File::from(fd),
                        dir: self.fd.clone(),
                        births: self.births.clone(),
                        mode,
                        root: self.root.clone(),
                        path: self.path.clone(),
                        named: None,
                        done: AtomicBool::new(false),
                    });
                }
                Err(e) => self.no_tmpfile(e)?,
            }
        }
        let name = self.temp_name();
        let c = cstr(&name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let file = File::from(open_at(&self.fd, &c, flags, mode)?);
        let temp = Temp {
            dir: self.fd.clone(),
            births: self.births.clone(),
            mode,
            root: self.root.clone(),
            path: self.path.clone(),
            named: Some(c),
            done: AtomicBool::new(false),
            file,
        };
        let ino = temp.file.metadata()?.ino();
        self.root.note(self, &name, ino)?;
        Ok(temp)
    }

    /// After `O_TMPFILE` failed with `e`: Ok (and named temps from now on) when the file
    /// system cannot make nameless files; else the error.
    fn no_tmpfile(&self, e: io::Error) -> io::Result<()> {
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => {
                self.root.0.tmpfile.store(NO, Relaxed);
                Ok(())
            }
            _ => Err(e),
        }
    }

    fn temp_name(&self) -> OsString {
        let shared = &self.root.0;
        OsString::from(format!(
            ".ferry-tmp-{}-{}",
            shared.id,
            shared.seq.fetch_add(1, Relaxed)
        ))
    }
}

/// A file being written: nameless (or under a recorded temp name) until published.
pub struct Temp {
    /// The file, open for writing.
    pub file: File,
    dir: Arc<OwnedFd>,
    /// Its directory's [`Births`].
    births: Arc<OnceLock<Option<Births>>>,
    /// The permission bits it was made with, before the umask.
    mode: u32,
    root: Root,
    path: PathBuf,
    /// The temp name, when the file system could not make a nameless file.
    named: Option<CString>,
    /// Published or discarded.
    done: AtomicBool,
}

impl Temp {
    /// What the file was born with, where certain: its directory is asked once per handle.
    pub fn born(&self) -> Born {
        match self.births.get_or_init(|| Births::of(&self.dir)) {
            Some(births) => births.born(self.mode),
            None => Born::default(),
        }
    }

    /// Gives the file its final `name` in its directory. Without `replace`, a name that is
    /// taken fails with [`io::ErrorKind::AlreadyExists`] and nothing changes; with it, the
    /// old file is replaced atomically (a reader sees the old or the new, never neither).
    ///
    /// # Errors
    /// As `linkat(2)` / `renameat2(2)`; the file stays unpublished, to retry or drop.
    pub fn publish(&self, name: &OsStr, replace: bool) -> io::Result<()> {
        let to = cstr(name)?;
        if let Some(temp) = &self.named {
            let flags = if replace { 0 } else { libc::RENAME_NOREPLACE };
            match rename_at(&self.dir, temp, &to, flags) {
                Err(e)
                    if !replace
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) =>
                {
                    // No RENAME_NOREPLACE here: link (which never replaces), then unlink.
                    self.link_named(temp, &to)?;
                    let _ = unlink_at(&self.dir, OsStr::from_bytes(temp.to_bytes()));
                }
                r => r?,
            }
            self.done.store(true, Relaxed);
            return Ok(());
        }
        match self.link(&to) {
            Err(e) if replace && e.kind() == io::ErrorKind::AlreadyExists => {
                // The name is taken: link under a recorded temp name, then rename over it.
                let dir = Dir {
                    fd: self.dir.clone(),
                    births: self.births.clone(),
                    root: self.root.clone(),
                    path: self.path.clone(),
                };
                let tname = dir.temp_name();
                let ino = self.file.metadata()?.ino();
                self.root.note(&dir, &tname, ino)?;
                let tc = cstr(&tname)?;
                self.link(&tc)?;
                if let Err(e) = rename_at(&self.dir, &tc, &to, 0) {
                    let _ = unlink_at(&self.dir, &tname);
                    return Err(e);
                }
            }
            r => r?,
        }
        self.done.store(true, Relaxed);
        Ok(())
    }

    fn link_named(&self, from: &CString, to: &CString) -> io::Result<()> {
        // SAFETY: NUL-terminated names relative to a directory we hold.
        let r = unsafe {
            libc::linkat(
                self.dir.as_raw_fd(),
                from.as_ptr(),
                self.dir.as_raw_fd(),
                to.as_ptr(),
                0,
            )
        };
        if r != 0 {
            return Err(last_err());
        }
        Ok(())
    }

    /// Links the nameless file as `to` (never replacing).
    fn link(&self, to: &CString) -> io::Result<()> {
        let shared = &self.root.0;
        if shared.empty_path.load(Relaxed) != NO {
            // SAFETY: an fd we own and a NUL-terminated name relative to a directory we hold.
            let r = unsafe {
                libc::linkat(
                    self.file.as_raw_fd(),
                    c"".as_ptr(),
                    self.dir.as_raw_fd(),
                    to.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            if r == 0 {
                shared.empty_path.store(YES, Relaxed);
                return Ok(());
            }
            let e = last_err();
            // Without CAP_DAC_READ_SEARCH the kernel answers ENOENT: go through /proc.
            match e.raw_os_error() {
                Some(libc::ENOENT | libc::EPERM) if shared.empty_path.load(Relaxed) == UNKNOWN => {
                    shared.empty_path.store(NO, Relaxed)
                }
                _ => return Err(e),
            }
        }
        let proc = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: NUL-terminated paths; the first is this process's own fd link.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc.as_ptr(),
                self.dir.as_raw_fd(),
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r != 0 {
            return Err(last_err());
        }
        Ok(())
    }

    /// Makes the directory's new entry durable.
    ///
    /// # Errors
    /// As `fsync(2)`.
    pub fn sync_dir(&self) -> io::Result<()> {
        // SAFETY: fsync of a descriptor we hold.
        if unsafe { libc::fsync(self.dir.as_raw_fd()) } != 0 {
            return Err(last_err());
        }
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        // Unpublished: a nameless file vanishes with its descriptor; a named one goes now.
        if let Some(name) = &self.named {
            if !self.done.load(Relaxed) {
                let _ = unlink_at(&self.dir, OsStr::from_bytes(name.to_bytes()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_appears_only_when_published_and_a_dropped_one_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path(), "ferry").unwrap();
        let d = root.dir(Path::new("a/b"), Some(0o777)).unwrap();
        let mut tmp = d.temp(0o644).unwrap();
        tmp.file.write_all(b"hello").unwrap();
        assert!(names(&t.path().join("a/b")).is_empty());
        tmp.publish(OsStr::new("x"), false).unwrap();
        assert_eq!(std::fs::read(t.path().join("a/b/x")).unwrap(), b"hello");
        let mut other = d.temp(0o644).unwrap();
        other.file.write_all(b"new").unwrap();
        let e = other.publish(OsStr::new("x"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        other.publish(OsStr::new("x"), true).unwrap();
        assert_eq!(std::fs::read(t.path().join("a/b/x")).unwrap(), b"new");
        drop(d.temp(0o644).unwrap());
        drop((d, other, tmp, root));
        assert_eq!(names(&t.path().join("a/b")), ["x"]);
        assert_eq!(names(t.path()), ["a"]);
    }

    #[test]
    fn without_nameless_files_named_temps_are_recorded_and_leave_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path(), "ferry").unwrap();
        root.0.tmpfile.store(NO, Relaxed); // as on a file system without O_TMPFILE
        let d = root.dir(Path::new("a"), Some(0o777)).unwrap();
        let mut tmp = d.temp(0o644).unwrap();
        tmp.file.write_all(b"one").unwrap();
        let record = names(t.path())
            .into_iter()
            .find(|n| n.starts_with(RECORD_PREFIX));
        assert!(record.is_some(), "{:?}", names(t.path()));
        tmp.publish(OsStr::new("x"), false).unwrap();
        let mut again = d.temp(0o644).unwrap();
        again.file.write_all(b"two").unwrap();
        again.publish(OsStr::new("x"), true).unwrap();
        drop(d.temp(0o644).unwrap()); // unpublished: removed at once
        assert_eq!(std::fs::read(t.path().join("a/x")).unwrap(), b"two");
        assert_eq!(names(&t.path().join("a")), ["x"]);
        drop((d, tmp, again, root));
        assert_eq!(names(t.path()), ["a"]);
    }

    #[test]
    fn a_link_anywhere_on_the_way_is_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("a/l")).unwrap();
        std::fs::write(t.path().join("f"), b"").unwrap();
        let root = Root::open(t.path(), "ferry").unwrap();
        let e = root.dir(Path::new("a/l/x"), Some(0o777)).err().unwrap();
        assert!(
            matches!(&e, BeneathError::Link(p, _) if p.ends_with("a/l")),
            "{e}"
        );
        let e = root.dir(Path::new("f/x"), Some(0o777)).err().unwrap();
        assert!(matches!(e, BeneathError::NotDir(_)), "{e}");
        for bad in ["../x", "/etc", "a/../a"] {
            assert!(root.dir(Path::new(bad), Some(0o777)).is_err(), "{bad}");
        }
        assert!(names(outside.path()).is_empty());
    }

    #[test]
    fn only_a_dead_runs_recorded_temps_are_swept_and_look_alikes_stay() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("d")).unwrap();
        // Look-alikes a user may own: never touched.
        for n in [
            ".ferry-tmp-999999-0",
            "d/.ferry-tmp-x",
            ".ferry-temps-abc",
            "d/.ferry-restore-notes.txt",
        ] {
            std::fs::write(t.path().join(n), b"mine").unwrap();
        }
        // A dead run's leftover: a recorded named temp. Simulated by a root whose record
        // stays (its lock released) while its temp is still there.
        let crashed = Root::open(t.path(), "ferry").unwrap();
        let d = crashed.dir(Path::new("d"), None).unwrap();
        let tname = d.temp_name();
        let mut f = File::create(t.path().join("d").join(&tname)).unwrap();
        f.write_all(b"junk").unwrap();
        let ino = f.metadata().unwrap().ino();
        crashed.note(&d, &tname, ino).unwrap();
        // A "crash": forget the root without running its drop, then release the lock.
        let rec = crashed.0.record.lock().unwrap().take().unwrap();
        drop(rec);
        std::mem::forget(crashed);
        let before = names(t.path());
        assert!(before
            .iter()
            .any(|n| n.starts_with(RECORD_PREFIX) && n != ".ferry-temps-abc"));
        let next = Root::open(t.path(), "ferry").unwrap();
        assert_eq!(next.sweep(), 1);
        assert!(!t.path().join("d").join(&tname).exists());
        assert_eq!(
            names(t.path()),
            [".ferry-temps-abc", ".ferry-tmp-999999-0", "d"]
        );
        assert_eq!(
            names(&t.path().join("d")),
            [".ferry-restore-notes.txt", ".ferry-tmp-x"]
        );
    }
}
