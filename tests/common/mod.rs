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
        if x % 5 == 0 {
            v.push((x >> 8) as u8);
        }
    }
    v.truncate(n);
    v
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
