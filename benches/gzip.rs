//! Single-thread gzip throughput at levels 1, 6 and 9: the per-core ceiling the pipeline
//! is judged against. Run with `cargo bench --bench gzip`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::gzip::compress_segmented;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;
use common::log_like;

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
