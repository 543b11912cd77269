//! The generic engine's own overhead: tasks/s through three no-op stages, beside three
//! threads joined by bare crossbeam channels doing the same hand-offs.
//! Run with `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry::pipeline::{CancelToken, Emitter, Pipeline, Producer, StageSpec};
use std::num::NonZeroUsize;
use std::time::Duration;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("at least 1")
}

const N: u64 = 100_000;

fn engine_run(queue: usize) -> u64 {
    let mut p = Pipeline::new(CancelToken::new());
    let producers: Vec<Producer<u64>> = vec![Box::new(|out| {
        for i in 0..N {
            if out.emit(i).is_err() {
                break;
            }
        }
        Ok(())
    })];
    let pass = |_| {
        |n: u64, out: &Emitter<u64>| {
            let _ = out.emit(n);
        }
    };
    let sums = p
        .source("src", nz(queue), producers)
        .unwrap()
        .stage(StageSpec::new("a", nz(1)).queue(nz(queue)), pass)
        .unwrap()
        .stage(StageSpec::new("b", nz(1)).queue(nz(queue)), pass)
        .unwrap()
        .stage(StageSpec::new("c", nz(1)).queue(nz(queue)), pass)
        .unwrap()
        .collect("sum", nz(1), |_| 0u64, |s: &mut u64, n| *s += n)
        .unwrap();
    p.wait().unwrap();
    sums.into_vec().iter().sum()
}

fn bare_run(queue: usize) -> u64 {
    let (tx0, mut rx) = crossbeam_channel::bounded::<u64>(queue);
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            tx0.send(i).unwrap();
        }
    });
    let mut stages = Vec::new();
    for _ in 0..3 {
        let (tx, next) = crossbeam_channel::bounded::<u64>(queue);
        let input = rx;
        stages.push(std::thread::spawn(move || {
            for n in input {
                tx.send(n).unwrap();
            }
        }));
        rx = next;
    }
    let sum = rx.iter().sum();
    producer.join().unwrap();
    for s in stages {
        s.join().unwrap();
    }
    sum
}

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/3-noop-stages");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for queue in [1usize, 64] {
        g.bench_function(format!("ferry-engine/q{queue}"), |b| {
            b.iter(|| engine_run(queue))
        });
        g.bench_function(format!("bare-crossbeam/q{queue}"), |b| {
            b.iter(|| bare_run(queue))
        });
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
