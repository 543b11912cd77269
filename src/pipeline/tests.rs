use super::*;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a count of at least 1")
}

/// Runs `f` on a thread and fails the test if it does not finish in time, instead of
/// hanging CI.
fn watchdog<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("pipeline hung: watchdog fired")
}

/// A producer that fails hands its error to `wait()`, typed, after what it emitted
/// went through; the other producers' items all arrive.
#[test]
fn a_producers_error_reaches_wait_as_its_own_type() {
    #[derive(Debug, thiserror::Error)]
    #[error("the list is damaged at line {0}")]
    struct Damaged(u32);
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let mut producers = counting_producers(1, 50);
        producers.push(Box::new(|out: &Emitter<u64>| {
            let _ = out.emit(1000);
            Err(Box::new(Damaged(7)))
        }));
        let got = p
            .source("list", nz(2), producers)
            .unwrap()
            .collect("count", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        let err = p.wait().unwrap_err();
        let PipelineError::Producer { stage, source } = err else {
            panic!("{err}");
        };
        assert_eq!(stage, "list");
        assert_eq!(source.downcast_ref::<Damaged>().map(|d| d.0), Some(7));
        assert_eq!(got.into_vec(), vec![51]);
    });
}

fn counting_producers(n: usize, each: u64) -> Vec<Producer<u64>> {
    (0..n)
        .map(|p| {
            Box::new(move |out: &Emitter<u64>| {
                for i in 0..each {
                    if out.emit(p as u64 * each + i).is_err() {
                        break;
                    }
                }
                Ok(())
            }) as Producer<u64>
        })
        .collect()
}

#[test]
fn toy_stages_fan_out_and_a_fourth_stage() {
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let out = p
            .source("numbers", nz(2), counting_producers(3, 100))
            .unwrap()
            // Stage that emits several outputs per input: n → n copies of... (n % 3) + 1.
            .stage(StageSpec::new("fan", nz(2)).queue(nz(1)), |_| {
                |n: u64, out: &Emitter<u64>| {
                    for _ in 0..(n % 3) + 1 {
                        if out.emit(n).is_err() {
                            return;
                        }
                    }
                }
            })
            .unwrap()
            .stage(StageSpec::new("square", nz(3)).queue(nz(2)), |_| {
                |n: u64, out: &Emitter<u64>| {
                    let _ = out.emit(n * n);
                }
            })
            .unwrap()
            // "Stage 4: validate" is one line at the call site.
            .stage(StageSpec::new("validate", nz(1)).queue(nz(3)), |_| {
                |n: u64, out: &Emitter<(u64, bool)>| {
                    let _ = out.emit((n, (n as f64).sqrt().fract() == 0.0));
                }
            })
            .unwrap()
            .collect(
                "sum",
                nz(2),
                |_| (0u64, 0u64),
                |acc: &mut (u64, u64), (n, ok)| {
                    assert!(ok);
                    acc.0 += n;
                    acc.1 += 1;
                },
            )
            .unwrap();
        let metrics = p.metrics();
        p.wait().unwrap();
        let (sum, count) = out
            .into_vec()
            .into_iter()
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let expect: Vec<u64> = (0..300u64)
            .flat_map(|n| std::iter::repeat_n(n * n, (n % 3 + 1) as usize))
            .collect();
        assert_eq!(count, expect.len() as u64);
        assert_eq!(sum, expect.iter().sum::<u64>());
        let names: Vec<_> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["numbers", "fan", "square", "validate", "sum"]);
        assert_eq!(metrics[0].emitted.load(Relaxed), 300);
        assert_eq!(metrics[1].items.load(Relaxed), 300);
        assert_eq!(metrics[1].emitted.load(Relaxed), expect.len() as u64);
        assert!(metrics.iter().all(|m| m.is_finished()));
        assert_eq!(metrics[2].latency.count(), expect.len() as u64);
    });
}

#[test]
fn a_source_without_producers_is_rejected() {
    let mut p = Pipeline::new(CancelToken::new());
    assert!(matches!(
        p.source::<u64>("s", nz(1), Vec::new()),
        Err(PipelineError::NoProducers { .. })
    ));
}

/// Engine events seen by an observer, for tests that check what was reported.
fn observed(p: &mut Pipeline) -> crossbeam_channel::Receiver<EngineEvent> {
    let (tx, rx) = crossbeam_channel::unbounded();
    p.observe(move |e| {
        let _ = tx.send(e.clone());
    });
    rx
}

#[test]
fn a_handler_that_panics_on_its_nth_item_is_reported_and_the_run_ends() {
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let events = observed(&mut p);
        let got = p
            .source("n", nz(1), counting_producers(2, 200))
            .unwrap()
            .stage(StageSpec::new("nth", nz(2)).queue(nz(1)), |_| {
                |n: u64, out: &Emitter<u64>| {
                    // The 8th, 108th, 208th and 308th items, whichever worker takes them.
                    assert!(n % 100 != 7, "item {n}");
                    let _ = out.emit(n);
                }
            })
            .unwrap()
            .collect("count", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        let err = p.wait().unwrap_err();
        assert!(
            matches!(&err, PipelineError::Panicked { stage, message } if stage == "nth" && message.starts_with("item ")),
            "{err}"
        );
        // Only the four items lost; the workers went on after each panic.
        assert_eq!(got.into_vec(), vec![396]);
        let panics: Vec<String> = events
            .try_iter()
            .filter(|e| matches!(e, EngineEvent::Panic { .. }))
            .map(|e| e.to_string())
            .collect();
        // One event per worker that panicked (its first panic).
        assert!((1..=2).contains(&panics.len()), "{panics:?}");
        assert!(
            panics[0].starts_with("nth worker panicked: item "),
            "{panics:?}"
        );
    });
}

#[test]
fn a_factory_that_panics_ends_its_worker_and_the_others_carry_on() {
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let events = observed(&mut p);
        let got = p
            .source("n", nz(2), counting_producers(1, 100))
            .unwrap()
            .stage(StageSpec::new("setup", nz(2)), |i| {
                assert!(i != 0, "no worker 0 today");
                |n: u64, out: &Emitter<u64>| {
                    let _ = out.emit(n);
                }
            })
            .unwrap()
            .collect("count", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        let err = p.wait().unwrap_err();
        assert!(
            matches!(&err, PipelineError::Panicked { stage, message } if stage == "setup" && message.contains("no worker 0")),
            "{err}"
        );
        assert_eq!(got.into_vec(), vec![100]);
        assert!(events.try_iter().any(
            |e| matches!(e, EngineEvent::Panic { message, .. } if message.contains("in setup"))
        ));
    });
}

#[test]
fn a_producer_that_panics_is_reported_and_the_others_are_delivered() {
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let mut producers = counting_producers(1, 50);
        producers.push(Box::new(|out: &Emitter<u64>| {
            let _ = out.emit(1000);
            panic!("the list broke");
        }));
        let got = p
            .source("walk", nz(2), producers)
            .unwrap()
            .collect("count", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        let err = p.wait().unwrap_err();
        assert!(
            matches!(&err, PipelineError::Panicked { stage, message } if stage == "walk" && message == "the list broke"),
            "{err}"
        );
        assert_eq!(got.into_vec(), vec![51]);
    });
}

#[test]
fn when_every_factory_panics_the_run_still_ends() {
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let got = p
            .source("n", nz(1), counting_producers(2, 1000))
            .unwrap()
            .stage(StageSpec::new("broken", nz(2)).queue(nz(1)), |_| {
                panic!("cannot start");
                #[allow(unreachable_code)]
                |n: u64, out: &Emitter<u64>| {
                    let _ = out.emit(n);
                }
            })
            .unwrap()
            .collect("count", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        assert!(matches!(p.wait(), Err(PipelineError::Panicked { .. })));
        assert_eq!(got.into_vec(), vec![0]);
    });
}

#[test]
fn a_panicking_item_is_reported_and_the_rest_go_on() {
    watchdog(60, || {
        let mut p = Pipeline::new(CancelToken::new());
        let got = p
            .source("n", nz(4), counting_producers(1, 50))
            .unwrap()
            .stage(StageSpec::new("picky", nz(2)), |_| {
                |n: u64, out: &Emitter<u64>| {
                    assert!(n != 7, "seven is bad");
                    let _ = out.emit(n);
                }
            })
            .unwrap()
            .collect("count", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        let err = p.wait().unwrap_err();
        assert!(
            matches!(&err, PipelineError::Panicked { stage, message } if stage == "picky" && message.contains("seven")),
            "{err}"
        );
        assert_eq!(got.into_vec(), vec![49]);
    });
}

#[test]
fn cancel_does_not_wait_for_a_producer_stuck_in_a_read() {
    watchdog(60, || {
        let cancel = CancelToken::new();
        let mut p = Pipeline::new(cancel.clone());
        // A producer that emits one item then blocks forever, like a read on an idle stdin.
        let (_hold, never) = crossbeam_channel::bounded::<()>(0);
        let producers: Vec<Producer<u64>> = vec![Box::new(move |out: &Emitter<u64>| {
            let _ = out.emit(1);
            // As a producer must before it waits: what it gathered goes first.
            let _ = out.flush();
            let _ = never.recv();
            Ok(())
        })];
        let (seen_tx, seen_rx) = crossbeam_channel::bounded(1);
        let got = p
            .source("stdin", nz(1), producers)
            .unwrap()
            .stage(StageSpec::new("echo", nz(1)), move |_| {
                let seen = seen_tx.clone();
                move |n: u64, out: &Emitter<u64>| {
                    let _ = seen.try_send(());
                    let _ = out.emit(n);
                }
            })
            .unwrap()
            .collect("c", nz(1), |_| 0u64, |c: &mut u64, _| *c += 1)
            .unwrap();
        seen_rx.recv().unwrap();
        cancel.cancel(CancelReason::Interrupted);
        p.wait().unwrap();
        assert_eq!(got.into_vec(), vec![1]);
    });
}

/// An item that counts itself as lost if it is dropped before it reaches the collector.
struct Tracked {
    id: u64,
    lost: Arc<AtomicU64>,
    consumed: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.consumed {
            self.lost.fetch_add(1, Relaxed);
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Thousands of tiny tasks through capacity-1 channels, random stage delays and random
/// cancellation points: never hangs, and every item created is either collected once or
/// accounted as dropped by cancellation — nothing leaks, nothing is duplicated.
#[test]
fn stress_tiny_tasks_capacity_one_random_delays_and_cancellation() {
    watchdog(240, || {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..24u64 {
            let cancel = CancelToken::new();
            let cancel_at = if round % 4 == 0 {
                u64::MAX
            } else {
                rng.next() % 3000
            };
            let created = Arc::new(AtomicU64::new(0));
            let lost = Arc::new(AtomicU64::new(0));
            let producers_done = crossbeam_channel::unbounded::<()>();
            let producers: Vec<Producer<Tracked>> = (0..3)
                .map(|p| {
                    let (created, lost, done) =
                        (created.clone(), lost.clone(), producers_done.0.clone());
                    Box::new(move |out: &Emitter<Tracked>| {
                        let _done = done;
                        for i in 0..1000 {
                            if out.is_cancelled() {
                                return Ok(());
                            }
                            created.fetch_add(1, Relaxed);
                            let t = Tracked {
                                id: p * 1000 + i,
                                lost: lost.clone(),
                                consumed: false,
                            };
                            if out.emit(t).is_err() {
                                return Ok(());
                            }
                        }
                        Ok(())
                    }) as Producer<Tracked>
                })
                .collect();
            drop(producers_done.0);
            let mut p = Pipeline::new(cancel.clone());
            let seed = rng.next();
            let delay = move |salt: u64| {
                let mut r = Rng(seed ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
                if r.next().is_multiple_of(16) {
                    std::thread::sleep(Duration::from_micros(r.next() % 200));
                }
            };
            let c2 = cancel.clone();
            let collected = p
                .source("src", nz(1), producers)
                .unwrap()
                .stage(
                    StageSpec::new("a", nz(1 + (round as usize % 3))).queue(nz(1)),
                    move |_| {
                        let c2 = c2.clone();
                        move |t: Tracked, out: &Emitter<Tracked>| {
                            delay(t.id);
                            if t.id == cancel_at {
                                c2.cancel(CancelReason::Requested);
                            }
                            let _ = out.emit(t);
                        }
                    },
                )
                .unwrap()
                .stage(StageSpec::new("b", nz(2)).queue(nz(1)), move |_| {
                    move |t: Tracked, out: &Emitter<Tracked>| {
                        delay(t.id + 7);
                        let _ = out.emit(t);
                    }
                })
                .unwrap()
                .collect(
                    "sink",
                    nz(1 + (round as usize % 2)),
                    |_| Vec::new(),
                    |ids: &mut Vec<u64>, mut t: Tracked| {
                        t.consumed = true;
                        ids.push(t.id);
                    },
                )
                .unwrap();
            p.wait().unwrap();
            // Detached producers may still be finishing; wait for them by their own signal.
            for _ in producers_done.1.iter() {}
            let mut ids: Vec<u64> = collected.into_vec().into_iter().flatten().collect();
            let n = ids.len() as u64;
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len() as u64, n, "round {round}: duplicates");
            assert_eq!(
                n + lost.load(Relaxed),
                created.load(Relaxed),
                "round {round}: items leaked"
            );
            if cancel_at == u64::MAX {
                assert_eq!(n, 3000, "round {round}");
            }
        }
    });
}

/// Items travel in batches, but nothing waits for a batch to fill: a producer that
/// flushes before it waits gets each item through two stages while it waits (each
/// worker sends what it gathered before it waits for input); then a stream of tiny
/// items all arrive, and the queues count items.
#[test]
fn a_batch_never_holds_an_item_while_its_worker_waits() {
    watchdog(60, || {
        let (seen_tx, seen_rx) = crossbeam_channel::unbounded::<u64>();
        let mut p = Pipeline::new(CancelToken::new());
        let producers: Vec<Producer<u64>> = vec![Box::new(move |out: &Emitter<u64>| {
            // One at a time, each waiting for the last to come out of the far end:
            // without the flushes this never ends (the watchdog fires).
            for i in 0..20u64 {
                out.emit(i).map_err(|_| "downstream gone")?;
                out.flush().map_err(|_| "downstream gone")?;
                assert_eq!(seen_rx.recv().ok(), Some(i));
            }
            // Then a stream, which may go in batches.
            for i in 20..20_000u64 {
                out.emit(i).map_err(|_| "downstream gone")?;
            }
            Ok(())
        })];
        let metrics = {
            let flow = p.source("list", nz(64), producers).unwrap();
            let flow = flow
                .stage(StageSpec::new("a", nz(2)), |_| {
                    |n: u64, out: &Emitter<u64>| {
                        let _ = out.emit(n);
                    }
                })
                .unwrap();
            flow.stage(StageSpec::new("b", nz(1)), move |_| {
                let seen = seen_tx.clone();
                move |n: u64, out: &Emitter<u64>| {
                    if n < 20 {
                        let _ = seen.send(n);
                    }
                    let _ = out.emit(n);
                }
            })
            .unwrap()
            .collect("sum", nz(1), |_| 0u64, |s: &mut u64, n| *s += n)
            .unwrap()
        };
        let stages = p.metrics();
        p.wait().unwrap();
        assert_eq!(metrics.into_vec(), vec![(0..20_000u64).sum::<u64>()]);
        // The queues count items: 64 messages of up to BATCH.
        assert_eq!(stages[1].queue_capacity, 64 * BATCH);
        assert_eq!(stages[1].queue_len.load(Relaxed), 0);
    });
}

/// A stage of one thread under a limit of 4 keeps 4 items in flight by deferring them:
/// each deferred item holds its permit until it emits from another thread, so never more
/// than 4 are out at once, every output arrives, and the stage counts every item.
#[test]
fn deferred_items_hold_their_permits_and_keep_the_stage_open_until_they_emit() {
    watchdog(60, || {
        const LIMIT: usize = 4;
        const ITEMS: u64 = 100;
        let (held_tx, held_rx) = crossbeam_channel::unbounded::<(u64, Deferred<u64>)>();
        let out_now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // Completes the deferred items from a thread of its own, four at a time (fewer at
        // the end): it can only ever hold four if one thread had four out at once.
        let completer = {
            let out_now = out_now.clone();
            std::thread::spawn(move || {
                let mut left = ITEMS as usize;
                let mut held = Vec::new();
                while left > 0 {
                    held.push(held_rx.recv().expect("an item deferred"));
                    if held.len() == LIMIT.min(left) {
                        left -= held.len();
                        for (n, later) in held.drain(..) {
                            out_now.fetch_sub(1, Relaxed);
                            let _ = later.emit(n * 10);
                        }
                    }
                }
            })
        };
        let mut p = Pipeline::new(CancelToken::new());
        let limit = Arc::new(Limit::fixed(LIMIT));
        let spec = StageSpec::new("send", nz(1)).limit(limit).threads(nz(1));
        let (o, m) = (out_now.clone(), most.clone());
        let sum = p
            .source("n", nz(4), counting_producers(1, ITEMS))
            .unwrap()
            .stage(spec, move |_| {
                let (held_tx, o, m) = (held_tx.clone(), o.clone(), m.clone());
                move |n: u64, out: &Emitter<u64>| {
                    let later = out.defer().expect("an item can be deferred once");
                    assert!(out.defer().is_none());
                    m.fetch_max(o.fetch_add(1, Relaxed) + 1, Relaxed);
                    let _ = held_tx.send((n, later));
                }
            })
            .unwrap()
            .collect("sum", nz(1), |_| 0u64, |s: &mut u64, n| *s += n)
            .unwrap();
        let stages = p.metrics();
        p.wait().unwrap();
        completer.join().unwrap();
        assert_eq!(sum.into_vec(), vec![(0..ITEMS).sum::<u64>() * 10]);
        assert_eq!(most.load(Relaxed), LIMIT);
        assert_eq!(stages[1].items.load(Relaxed), ITEMS);
        assert_eq!(stages[1].busy.load(Relaxed), 0);
    });
}
