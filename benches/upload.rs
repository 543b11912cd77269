//! Latency hiding: files/s through the `sim:` sink at 50 ms latency for 1, 8, 32 and 64
//! upload workers. Each file is two requests (its one part, then the commit), so one
//! worker manages about 10 files/s and throughput should grow with the worker count.
//! Run with `cargo bench --bench upload`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferry::pipeline::CancelToken;
use ferry::sink::{SimSpec, SinkSpec};
use ferry::Config;
use std::time::Duration;

fn upload(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("upload/sim-latency-50ms");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(12));
    for workers in [1usize, 8, 32, 64] {
        // About one second of work per run whatever the worker count.
        let files = 10 * workers;
        let src = dir.path().join(format!("w{workers}"));
        for i in 0..files {
            let p = src.join(format!("d{}/f{i}.log", i % 8));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("line {i}\n").repeat(200)).unwrap();
        }
        let config = Config::builder(
            vec![src],
            SinkSpec::Sim(SimSpec::parse("latency=50ms").unwrap()),
        )
        .upload_workers(std::num::NonZeroUsize::new(workers).unwrap())
        .build()
        .unwrap();
        g.throughput(Throughput::Elements(files as u64));
        g.bench_function(format!("workers-{workers}"), |b| {
            b.iter_batched(
                || (),
                |_| {
                    let s = ferry::run(&config, CancelToken::new()).unwrap();
                    assert_eq!(s.totals.succeeded, files as u64);
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, upload);
criterion_main!(benches);
