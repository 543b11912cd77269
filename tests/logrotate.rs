//! `ferry watch` beside a real `logrotate` (Debian's), in each of its modes, against a
//! log that a loop keeps appending to: every generation ends in the sink once, under the
//! name it has in the directory; a renamed generation is copied in the store, never sent
//! again; what logrotate compressed goes as it is.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// `create`: `app.log` renamed to `app.log.1`, a new one made.
#[test]
fn create() {
    matrix("create", &["app.log.2", "app.log.3"]);
}

/// `copytruncate`: `app.log` copied to `app.log.1`, then emptied in place.
#[test]
fn copytruncate() {
    matrix("copytruncate", &["app.log.2", "app.log.3"]);
}

/// `compress`: each generation gzipped by logrotate as it is rotated (`app.log.1.gz`).
#[test]
fn compress() {
    matrix("create\n    compress", &["app.log.2.gz", "app.log.3.gz"]);
}

/// `compress` with `delaycompress`: `app.log.1` stays plain for one more rotation.
#[test]
fn delaycompress() {
    matrix("create\n    compress\n    delaycompress", &["app.log.3.gz"]);
}

/// Appends numbered lines to `log` until stopped, one every millisecond, opening it for
/// each line as a logger that reopens would (never creating it: in `create` mode the file
/// is logrotate's to make).
struct Writer {
    stop: Arc<AtomicBool>,
    lines: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(log: PathBuf) -> Writer {
        let (stop, lines) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, n) = (stop.clone(), lines.clone());
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            while !s.load(Ordering::Relaxed) {
                if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) {
                    let i = n.load(Ordering::Relaxed);
                    f.write_all(format!("line {i:08}\n").as_bytes()).unwrap();
                    n.store(i + 1, Ordering::Relaxed);
                }
                // Pacing the load, not waiting for anything.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Writer {
            stop,
            lines,
            thread: Some(thread),
        }
    }

    /// Stops the loop; returns how many lines it wrote.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.lines.load(Ordering::Relaxed)
    }
}

/// What is in `dir` now: name → (inode, size, mtime).
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.len(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

/// Three rotations of `app.log` in logrotate's mode `mode` while a loop appends to it and
/// `ferry watch` runs; the names in `renamed_only` come about by rename alone, so ferry
/// must never send them.
fn matrix(mode: &str, renamed_only: &[&str]) {
    let logrotate = ["/usr/sbin/logrotate", "/sbin/logrotate"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("logrotate is not installed (Debian: apt-get install logrotate; .ci/run does)");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    write(&src, "app.log", b"");
    let conf = t.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n    rotate 5\n    missingok\n    nomail\n    {mode}\n}}\n",
            src.join("app.log").display()
        ),
    )
    .unwrap();
    let out = t.path().join("out");
    let mut w = Running::spawn([
        "watch".to_string(),
        src.display().to_string(),
        "--to".into(),
        format!("dir:{}", out.display()),
        "--settle".into(),
        "300ms".into(),
        "-v".into(),
    ]);
    w.wait_for("watch: watching 1 input");
    let writer = Writer::start(src.join("app.log"));
    for round in 1..=3 {
        // Some lines in this generation first.
        let from = writer.lines.load(Ordering::Relaxed);
        while writer.lines.load(Ordering::Relaxed) < from + 50 {
            std::thread::yield_now();
        }
        let before = snapshot(&src);
        let status = std::process::Command::new(logrotate)
            .args(["-f", "-s"])
            .arg(t.path().join("state"))
            .arg(&conf)
            .status()
            .unwrap();
        assert!(status.success(), "logrotate failed in round {round}");
        // Every rotated file that is new or changed is shipped or copied once settled.
        let after = snapshot(&src);
        let mut waiting: BTreeSet<String> = after
            .iter()
            .filter(|(name, now)| *name != "app.log" && before.get(*name) != Some(now))
            .map(|(name, _)| name.clone())
            .collect();
        let remaining = std::cell::RefCell::new(waiting.clone());
        w.wait_until(&format!("round {round}: {waiting:?} shipped"), |l| {
            let mut r = remaining.borrow_mut();
            if l.starts_with("[done]") || l.starts_with("[renamed]") {
                r.retain(|name| !l.contains(&format!("/{name} ")));
            }
            r.is_empty()
        });
        waiting.clear();
    }
    let lines = writer.stop();
    // The live log, once the loop stopped and it settled.
    let last = snapshot(&src)["app.log"].1;
    if last > 0 {
        w.wait_until("app.log shipped", |l| {
            l.starts_with("[done]") && l.contains("/app.log ")
        });
    }
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");

    // What went how, per name (shown with --nocapture).
    let mut how = BTreeMap::<(String, &str), u32>::new();
    for l in err.lines() {
        for tag in ["[done]", "[renamed]"] {
            if let Some(rest) = l.strip_prefix(tag) {
                let path = rest.split_whitespace().next().unwrap_or_default();
                let name = path.rsplit('/').next().unwrap_or_default().to_string();
                *how.entry((name, tag)).or_default() += 1;
            }
        }
    }
    eprintln!("{mode:?}: {lines} lines; {how:?}");
    // Never sent again: the names that only a rename makes are copied, never read.
    for name in renamed_only {
        let sent = |l: &&str| l.starts_with("[done]") && l.contains(&format!("/{name} "));
        assert!(!err.lines().any(|l| sent(&l)), "{name} was sent: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("[renamed]") && l.contains(&format!("/{name} "))),
            "{name} was not copied: {err}"
        );
    }
    // The sink holds each file of the directory once, under its name, and nothing else.
    let names: Vec<String> = snapshot(&src).into_keys().collect();
    let objects = |n: &str| match n.ends_with(".gz") {
        true => n.to_string(),
        false => format!("{n}.gz"),
    };
    let stored: BTreeSet<String> = std::fs::read_dir(out.join("app"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let wanted: BTreeSet<String> = names.iter().map(|n| objects(n)).collect();
    assert_eq!(stored, wanted, "{err}");
    let mut seen = BTreeMap::<String, u32>::new();
    for n in &names {
        let file = std::fs::read(src.join(n)).unwrap();
        let object = out.join("app").join(objects(n));
        let content = match n.ends_with(".gz") {
            true => {
                assert_eq!(std::fs::read(&object).unwrap(), file, "{n} as it is");
                gunzip(&object)
            }
            false => {
                let got = gunzip(&object);
                assert_eq!(got, file, "{n}");
                got
            }
        };
        for l in String::from_utf8(content).unwrap().lines() {
            *seen.entry(l.to_string()).or_default() += 1;
        }
    }
    // Each line of each generation once (copytruncate may lose the lines written between
    // its copy and its truncate: logrotate's own window, not ferry's).
    assert!(seen.values().all(|&n| n == 1), "a line twice: {seen:?}");
    if !mode.contains("copytruncate") {
        assert_eq!(seen.len() as u64, lines, "every line written");
    }
    verify_dir(&out).assert().success();
}
