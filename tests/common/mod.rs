//! Helpers shared by the CLI and end-to-end tests.
#![allow(dead_code)]

use assert_cmd::Command;
use flate2::read::{GzDecoder, MultiGzDecoder};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ferry binary, bars off, with a watchdog so a hang fails instead of stalling CI.
pub fn ferry() -> Command {
    let mut c = Command::cargo_bin("ferry").unwrap();
    c.arg("--progress").arg("never");
    c.timeout(Duration::from_secs(120));
    c
}

/// Decodes `gz` with flate2, checking it is exactly one gzip member, and — where system
/// gzip is installed — with `gzip -dc` too; both must agree.
pub fn gunzip(gz_path: &Path) -> Vec<u8> {
    let gz = std::fs::read(gz_path).unwrap_or_else(|e| panic!("{}: {e}", gz_path.display()));
    let mut d = GzDecoder::new(&gz[..]);
    let mut out = Vec::new();
    d.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{}: {e}", gz_path.display()));
    assert!(
        d.into_inner().is_empty(),
        "{}: more than one gzip member",
        gz_path.display()
    );
    let mut multi = Vec::new();
    MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut multi)
        .unwrap();
    assert_eq!(multi, out);
    if let Ok(o) = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(gz_path)
        .output()
    {
        assert!(
            o.status.success(),
            "gzip -dc {}: {:?}",
            gz_path.display(),
            o
        );
        assert_eq!(o.stdout, out, "gzip -dc disagrees on {}", gz_path.display());
    }
    out
}

/// Writes `content` to `dir/rel`, creating parents.
pub fn write(dir: &Path, rel: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    p
}

/// Deterministic, moderately compressible bytes.
pub fn text(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let words: [&[u8]; 8] = [
        b"alpha ", b"beta ", b"gamma ", b"delta\n", b"42 ", b"ERROR ", b"GET /x ", b"ok\n",
    ];
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(words[(x % 8) as usize]);
        if x.is_multiple_of(5) {
            v.push((x >> 8) as u8);
        }
    }
    v.truncate(n);
    v
}

/// The objects at a `dir:` sink (not ferry's own `.ferry-*` files), relative, sorted.
pub fn sink_objects(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".ferry-")
        })
        .collect()
}

/// All files under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Parses a `--report -` JSON from stdout and checks the four outcomes add up.
pub fn report(stdout: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(stdout).expect("report is JSON");
    let t = &v["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("totals.{k}"));
    assert_eq!(
        n("succeeded") + n("skipped") + n("failed") + n("cancelled"),
        n("discovered"),
        "outcomes must add up: {t}"
    );
    v
}

/// No temp file anywhere under `out`, and every `.gz` decodes; returns how many there are.
pub fn outputs_are_whole(out: &Path) -> usize {
    let mut n = 0;
    for rel in files_under(out) {
        let name = rel.to_string_lossy().into_owned();
        assert!(!name.contains(".ferry-tmp-"), "temp file left: {name}");
        if name.ends_with(".gz") {
            gunzip(&out.join(&rel));
            n += 1;
        }
    }
    n
}

/// `n` incompressible bytes (xorshift), the same every time.
pub fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `ferry SRC --to dir:OUT EXTRA…`, asserted by the caller.
pub fn deliver_dir(src: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    ferry()
        .arg(src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .args(extra)
        .assert()
}

/// `ferry verify` of the `dir:` sink `out`, without progress lines.
pub fn verify_dir(out: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("ferry").unwrap();
    c.args(["verify", "--progress", "never", "--to"])
        .arg(format!("dir:{}", out.display()))
        .timeout(Duration::from_secs(120));
    c
}

/// Runs `ferry SRC --report - --to OUT`, expects success, and returns the checked report.
pub fn deliver(src: &Path, out: &Path) -> serde_json::Value {
    let r = ferry()
        .arg(src)
        .args(["--report", "-", "--to"])
        .arg(out)
        .assert()
        .success();
    report(&r.get_output().stdout)
}

/// A ferry process under test, spawned as a user's shell would (no signal dispositions,
/// limits or environment changed), whose stderr lines arrive on a channel as they are
/// written: tests wait on ferry's own events, never on a clock, and a watchdog turns a
/// hang into a failure.
pub struct Running {
    child: std::process::Child,
    lines: crossbeam_channel::Receiver<String>,
    seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Kept open when the test writes the paths itself (`--files-from -`).
    pub stdin: Option<std::process::ChildStdin>,
}

/// How long any wait in a harness may take before the test fails as hung.
pub const WATCHDOG: Duration = Duration::from_secs(120);

impl Running {
    /// Starts `ferry ARGS --progress never` with stdin piped (open until dropped) and
    /// stdout captured.
    pub fn spawn<I, S>(args: I) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Running::spawn_in(None, args)
    }

    /// [`Running::spawn`] in directory `dir`.
    pub fn spawn_in<I, S>(dir: Option<&Path>, args: I) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"));
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        Running::start(cmd.args(args))
    }

    /// [`Running::spawn`] with these environment variables set as well.
    pub fn spawn_env<'a, I, S>(
        args: I,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Running
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"));
        Running::start(cmd.args(args).envs(env))
    }

    fn start(cmd: &mut std::process::Command) -> Running {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .args(["--progress", "never"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry");
        let (tx, lines) = crossbeam_channel::unbounded();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        Running {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// The process id of the ferry under test.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line contains `text`; fails the test after [`WATCHDOG`].
    pub fn wait_for(&mut self, text: &str) {
        self.wait_until(text, |l| l.contains(text));
    }

    /// Waits until a stderr line satisfies `hit` (described as `what` if it never does);
    /// returns the line.
    pub fn wait_until(&mut self, what: &str, hit: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(WATCHDOG)
                .unwrap_or_else(|_| panic!("never saw {what}; stderr so far: {:?}", self.seen));
            let found = hit(&line);
            self.seen.push(line.clone());
            if found {
                return line;
            }
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for the exit (failing after [`WATCHDOG`]); returns the status, all of stderr
    /// and all of stdout. Stdin stays open until ferry has exited (drop `stdin` first to
    /// send EOF), so a producer blocked in a read must be ended by ferry itself.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, Vec<u8>) {
        let stdin = self.stdin.take();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(WATCHDOG)
            .expect("ferry did not exit in time")
            .unwrap();
        drop(stdin);
        // The reader ends when the pipe closes.
        self.seen.extend(self.lines.iter());
        let stdout = self.stdout.take().unwrap().join().unwrap();
        (status, self.seen.join("\n"), stdout)
    }
}

/// The address in a line saying `… http://ADDR/metrics` (what ferry logs for
/// `--metrics-addr`).
pub fn metrics_addr(line: &str) -> String {
    line.split("http://")
        .nth(1)
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
        .to_string()
}

/// `GET /metrics` at `addr` with a plain HTTP request: the whole response.
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    body
}
