//! End-to-end throughput of `ferry::run` over generated corpora (many small files, mixed
//! sizes, one big file), with 1 compress worker and with one per core. Inputs and outputs
//! live on tmpfs (`/dev/shm`) when it exists, so the page cache is not what is measured.
//! Run with `cargo bench --bench pipeline` (add `--features libdeflate` for that engine).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferry::pipeline::CancelToken;
use ferry::sink::SinkSpec;
use ferry::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Deterministic text-like bytes (log lines) with a share of random bytes.
fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let random = next() % 5 == 0;
    let mut v = Vec::with_capacity(n + 128);
    while v.len() < n {
        let r = next();
        if random {
            v.extend_from_slice(&r.to_le_bytes());
        } else {
            v.extend_from_slice(
                format!(
                    "{} {} [{}] GET /api/v1/items/{} took {}ms\n",
                    1_700_000_000 + r % 100_000,
                    ["INFO", "WARN", "ERROR"][(r % 3) as usize],
                    ["db.pool", "http", "cache"][(r >> 8) as usize % 3],
                    r >> 40,
                    r % 997
                )
                .as_bytes(),
            );
        }
    }
    v.truncate(n);
    v
}

struct Corpus {
    dir: tempfile::TempDir,
    bytes: u64,
    files: u64,
}

fn base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn corpus(name: &str, sizes: &[usize]) -> Corpus {
    let dir = tempfile::Builder::new()
        .prefix("ferry-bench-")
        .tempdir_in(base())
        .unwrap();
    let mut bytes = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let p = dir.path().join(name).join(format!("d{}/f{i}", i % 16));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(n, i as u64)).unwrap();
        bytes += n as u64;
    }
    Corpus {
        dir,
        bytes,
        files: sizes.len() as u64,
    }
}

fn run_once(src: &Path, out: &Path, jobs: usize) {
    let _ = std::fs::remove_dir_all(out);
    let c = Config::builder(vec![src.to_path_buf()], SinkSpec::Dir(out.to_path_buf()))
        .jobs(std::num::NonZeroUsize::new(jobs).unwrap())
        .build()
        .unwrap();
    let s = ferry::run(&c, CancelToken::new()).unwrap();
    assert_eq!(s.totals.succeeded, s.totals.discovered);
}

fn pipeline(c: &mut Criterion) {
    let cores = ferry::config::cores().get();
    let small: Vec<usize> = (0..2000).map(|i| 1024 + (i * 7919) % (15 * 1024)).collect();
    let mixed: Vec<usize> = (0..40)
        .map(|i| (4096.0 * 2f64.powf(11.0 * i as f64 / 39.0)) as usize)
        .collect();
    let big = vec![64 << 20];
    for (name, sizes) in [("small", small), ("mixed", mixed), ("big", big)] {
        let corpus = corpus(name, &sizes);
        let src = corpus.dir.path().join(name);
        let out = corpus.dir.path().join("out");
        let mut g = c.benchmark_group(format!("pipeline/{name}"));
        // One run reports both MiB/s and files/s.
        g.throughput(Throughput::ElementsAndBytes {
            elements: corpus.files,
            bytes: corpus.bytes,
        });
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(8));
        for jobs in [1, cores] {
            g.bench_function(format!("j{jobs}"), |b| {
                b.iter_batched(
                    || (),
                    |_| run_once(&src, &out, jobs),
                    BatchSize::PerIteration,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
