//! The restore side's inflate: one gzip member of 32 MiB of log text decoded as a single
//! stream (what restore does for an object without a segment index) and as independent
//! 1 MiB segments on every core (what it does with one). Run with
//! `cargo bench --bench inflate`; the segment-parallel case needs independent segments,
//! which only the libdeflate engine (the default) makes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry::gzip::{self, SegmentCompressor};
use ferry::inflate::{inflate_object, inflate_segment, SegmentInflater};
use rayon::prelude::*;
use std::time::Duration;

const SEG: usize = 1 << 20;

/// Log-like text, as in the gzip bench.
fn log_like(n: usize) -> Vec<u8> {
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
                "{ts} INFO [db.pool] request id={} took {}ms\n",
                x >> 40,
                x % 997
            )
            .as_bytes(),
        );
    }
    out.truncate(n);
    out
}

fn inflate(c: &mut Criterion) {
    let data = log_like(32 << 20);
    // The member as ferry writes it: header, unprimed segments, trailer.
    let mut engine = SegmentCompressor::new(6);
    let n = data.len().div_ceil(SEG);
    let pieces: Vec<Vec<u8>> = data
        .chunks(SEG)
        .enumerate()
        .map(|(i, s)| engine.compress(s, None, i + 1 == n).unwrap())
        .collect();
    let mut member = gzip::header(b"bench.log", 0, 6);
    for p in &pieces {
        member.extend_from_slice(p);
    }
    member.extend_from_slice(&gzip::trailer(gzip::crc32(&data), data.len() as u64));

    let mut g = c.benchmark_group("inflate");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("single-stream", |b| {
        b.iter(|| inflate_object(None, &member[..], &mut std::io::sink(), &|_| {}).unwrap())
    });
    g.bench_function("segments-parallel", |b| {
        b.iter(|| {
            pieces.par_iter().enumerate().for_each_init(
                SegmentInflater::default,
                |engine, (i, p)| {
                    let len = SEG.min(data.len() - i * SEG);
                    let mut out = vec![0u8; len];
                    let mut piece = p.clone();
                    inflate_segment(&mut piece, i + 1 == n, &mut out, engine).unwrap();
                    std::hint::black_box(gzip::crc32(&out));
                },
            )
        })
    });
    g.finish();
}

criterion_group!(benches, inflate);
criterion_main!(benches);
