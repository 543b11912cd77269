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

#[path = "common/mod.rs"]
mod common;
use common::log_like;

const SEG: usize = 1 << 20;

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
