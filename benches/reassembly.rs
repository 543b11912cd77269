//! Ordered reassembly, two ways (issue 22): ferry's upload stage (a sharded map of
//! per-file assemblies; the worker that holds a file's next piece writes it and any that
//! follow, outside the lock) against gzp's (one oneshot channel per piece, queued in the
//! order the pieces were submitted; a writer reads the receivers in that order, with no
//! shared reorder state).
//!
//! Both run the same work: F files of K pieces of 64 KiB, "compressed" by two threads
//! (a CRC-32 over the piece, so pieces finish out of order), "written" by two threads
//! (another CRC-32 per piece into the file's running hash, in order). gzp's writers each
//! own a file from its first piece to its last, so in ferry's pipeline they could wait on
//! a piece that needs memory held by files no writer owns yet; the bench bounds the files
//! in flight (the file slots that way would need), which ferry's map does not.
//! Run with `cargo bench --bench reassembly`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FILES: usize = 64;
const PIECES: u32 = 16;
const PIECE: usize = 64 << 10;
const WORKERS: usize = 2;

struct Piece {
    file: usize,
    index: u32,
    data: Arc<Vec<u8>>,
    crc: u32,
}

fn compress(file: usize, index: u32, data: &Arc<Vec<u8>>) -> Piece {
    Piece {
        file,
        index,
        data: data.clone(),
        crc: crc32fast::hash(data),
    }
}

/// The in-order "write": the file's running hash of its pieces' CRCs and bytes.
fn write(h: &mut crc32fast::Hasher, p: &Piece) {
    h.update(&p.crc.to_le_bytes());
    h.update(&p.data[..4096]);
}

#[derive(Default)]
struct Assembly {
    next: u32,
    pending: BTreeMap<u32, Piece>,
    draining: bool,
    hash: Option<crc32fast::Hasher>,
}

/// One shard of the map of files being assembled, by file id.
type Shard = Mutex<HashMap<usize, Arc<Mutex<Assembly>>>>;

/// ferry's upload stage: pieces from any compress worker, reordered in a sharded map.
fn lock_map(data: &Arc<Vec<u8>>) -> u32 {
    let (seg_tx, seg_rx) = bounded::<(usize, u32)>(64);
    let (pk_tx, pk_rx) = bounded::<Piece>(64);
    let shards: Arc<Vec<Shard>> = Arc::new((0..16).map(|_| Mutex::default()).collect());
    let done = Arc::new(Mutex::new(0u32));
    std::thread::scope(|s| {
        s.spawn(move || {
            for f in 0..FILES {
                for i in 0..PIECES {
                    seg_tx.send((f, i)).unwrap();
                }
            }
        });
        for _ in 0..WORKERS {
            let (rx, tx) = (seg_rx.clone(), pk_tx.clone());
            s.spawn(move || {
                for (f, i) in rx {
                    tx.send(compress(f, i, data)).unwrap();
                }
            });
        }
        drop(pk_tx);
        for _ in 0..WORKERS {
            let (rx, shards, done) = (pk_rx.clone(), shards.clone(), done.clone());
            s.spawn(move || {
                for p in rx {
                    let (id, shard) = (p.file, &shards[p.file % 16]);
                    let asm = shard.lock().unwrap().entry(id).or_default().clone();
                    let mut a = asm.lock().unwrap();
                    a.pending.insert(p.index, p);
                    if a.draining {
                        continue;
                    }
                    a.draining = true;
                    loop {
                        let next = a.next;
                        let Some(p) = a.pending.remove(&next) else {
                            a.draining = false;
                            break;
                        };
                        a.next += 1;
                        let mut h = a.hash.take().unwrap_or_default();
                        drop(a);
                        write(&mut h, &p);
                        if p.index + 1 == PIECES {
                            shard.lock().unwrap().remove(&id);
                            *done.lock().unwrap() ^= h.finalize();
                            break;
                        }
                        a = asm.lock().unwrap();
                        a.hash = Some(h);
                    }
                }
            });
        }
    });
    let x = *done.lock().unwrap();
    x
}

/// gzp's way: each piece's result comes back through its own oneshot, and the writer
/// that owns the file reads them in the order they were submitted.
fn receivers(data: &Arc<Vec<u8>>) -> u32 {
    let (seg_tx, seg_rx) = bounded::<(usize, u32, Sender<Piece>)>(64);
    // A file's receivers, in order; at most WORKERS files in flight (the file slots).
    let (file_tx, file_rx) = bounded::<Receiver<Receiver<Piece>>>(WORKERS);
    let done = Arc::new(Mutex::new(0u32));
    std::thread::scope(|s| {
        s.spawn(move || {
            for f in 0..FILES {
                let (q_tx, q_rx) = bounded(PIECES as usize);
                file_tx.send(q_rx).unwrap();
                for i in 0..PIECES {
                    let (tx, rx) = bounded(1);
                    q_tx.send(rx).unwrap();
                    seg_tx.send((f, i, tx)).unwrap();
                }
            }
        });
        for _ in 0..WORKERS {
            let rx = seg_rx.clone();
            s.spawn(move || {
                for (f, i, reply) in rx {
                    let _ = reply.send(compress(f, i, data));
                }
            });
        }
        for _ in 0..WORKERS {
            let (rx, done) = (file_rx.clone(), done.clone());
            s.spawn(move || {
                for queue in rx {
                    let mut h = crc32fast::Hasher::new();
                    for piece in queue {
                        write(&mut h, &piece.recv().unwrap());
                    }
                    *done.lock().unwrap() ^= h.finalize();
                }
            });
        }
    });
    let x = *done.lock().unwrap();
    x
}

fn reassembly(c: &mut Criterion) {
    let data = Arc::new(
        (0..PIECE)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    assert_eq!(lock_map(&data), receivers(&data), "both write the same");
    let mut g = c.benchmark_group("reassembly");
    g.throughput(Throughput::Elements(FILES as u64 * PIECES as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("lock-map", |b| b.iter(|| lock_map(&data)));
    g.bench_function("receivers", |b| b.iter(|| receivers(&data)));
    g.finish();
}

criterion_group!(benches, reassembly);
criterion_main!(benches);
