//! The per-core ceiling of the deflate engine in this build, on real files: every file
//! under DIR is read into memory first, then compressed on ONE thread exactly as ferry
//! cuts it (1 MiB segments, primed when the engine supports it). No I/O is timed.
//!
//!   cargo run --release --example deflate_rate -- DIR [LEVEL]
//!   cargo run --release --features libdeflate --example deflate_rate -- DIR [LEVEL]
//!
//! With the files/s of the kernel's per-file work, this gives the 2-core ceiling the
//! peer comparison is judged against: (bytes ÷ rate + files × per-file cost) ÷ 2.

use ferry::gzip::{compress_segmented, ENGINE};
use std::path::Path;
use std::time::Instant;

fn collect(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let entry = entry.expect("directory entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            collect(&entry.path(), out);
        } else if kind.is_file() {
            out.push(std::fs::read(entry.path()).expect("readable file"));
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: deflate_rate DIR [LEVEL]");
    let level: u32 = args.next().map_or(6, |l| l.parse().expect("level 0-9"));
    let mut files = Vec::new();
    collect(Path::new(&dir), &mut files);
    let bytes: usize = files.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut out = 0usize;
    for f in &files {
        out += compress_segmented(f, level, 1 << 20, b"", 0)
            .expect("deflate")
            .len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{ENGINE} level {level}: {} files, {bytes} bytes -> {out} ({:.2}%) in {secs:.2} s on one core = {:.1} MB/s",
        files.len(),
        100.0 * out as f64 / bytes.max(1) as f64,
        bytes as f64 / secs / 1e6
    );
}
