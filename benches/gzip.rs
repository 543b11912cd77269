//! Single-thread gzip throughput at levels 1, 6 and 9: the per-core ceiling the pipeline
//! is judged against. Run with `cargo bench --bench gzip`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::gzip::compress_segmented;
use std::time::Duration;

/// Log-like text: timestamps, levels, modules and a few numbers, like real server logs.
fn log_like(n: usize) -> Vec<u8> {
    let levels = ["INFO", "WARN", "ERROR", "DEBUG"];
    let modules = [
        "http.server",
        "db.pool",
        "auth.session",
        "cache.lru",
        "queue.worker",
    ];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(n + 200);
    let mut ts = 1_700_000_000_000u64;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ts += x % 1000;
        out.extend_from_slice(
            format!(
                "{ts} {} [{}] request id={} took {}ms user={}\n",
                levels[(x % 4) as usize],
                modules[(x >> 8) as usize % 5],
                x >> 40,
                x % 997,
                (x >> 20) % 5000
            )
            .as_bytes(),
        );
    }
    out.truncate(n);
    out
}

fn gzip_levels(c: &mut Criterion) {
    let data = log_like(32 << 20);
    let mut g = c.benchmark_group("gzip");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for level in [1u32, 6, 9] {
        g.bench_with_input(BenchmarkId::new("level", level), &level, |b, &level| {
            b.iter(|| compress_segmented(&data, level, 1 << 20, b"bench.log", 0).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, gzip_levels);
criterion_main!(benches);
