//! Cancellation end to end: Ctrl-C (SIGINT/SIGTERM), --timeout, and the library token.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

fn interrupt_mid_run(signal: i32) {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/first.txt", &text(1000, 1));
    write(t.path(), "d/second.txt", &text(1000, 2));
    let out = t.path().join("out");
    // Paths come from stdin, which stays open: the run cannot end by itself, so the signal
    // is what ends it, and the producer is blocked in a read when it arrives.
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("ferry"))
        .current_dir(t.path())
        .args([
            "--files-from",
            "-",
            "-v",
            "--progress",
            "never",
            "--report",
            "-",
            "--to",
        ])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"d/first.txt\n").unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    // Wait for the pipeline's own event: the first file delivered.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("no [done] line within 60 s");
        if line.contains("[done]") {
            break;
        }
    }
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut s).unwrap();
        let status = child.wait().unwrap();
        let _ = done_tx.send((status, s));
    });
    let (status, stdout) = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ferry did not exit after the signal");
    drop(stdin);
    assert_eq!(status.code(), Some(130));
    let err: Vec<String> = rx.try_iter().collect();
    let err = err.join("\n");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("1 succeeded"), "{err}");
    let v = report(&stdout);
    assert_eq!(v["cancelled"], "interrupted");
    assert_eq!(gunzip(&out.join("d/first.txt.gz")), text(1000, 1));
    outputs_are_whole(&out);
}

#[test]
fn sigint_stops_the_run_prints_the_summary_and_exits_130() {
    interrupt_mid_run(libc::SIGINT);
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    interrupt_mid_run(libc::SIGTERM);
}

#[test]
fn a_deadline_cancels_the_rest_and_names_the_cause() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..300 {
        write(&src, &format!("d{}/f{i}", i % 7), &text(20_000, i));
    }
    let out = t.path().join("out");
    let r = ferry()
        .arg(&src)
        .args([
            "--timeout",
            "1ns",
            "-j",
            "1",
            "--queue",
            "1",
            "--report",
            "-",
            "--to",
        ])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("deadline reached"));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["cancelled"], "deadline reached");
    // The deadline may even fire before anything is discovered: then nothing is counted,
    // which is right (producers stop). Either way the run did not finish.
    assert!(v["totals"]["succeeded"].as_u64().unwrap() < 300, "{v}");
    outputs_are_whole(&out);
    // A rerun delivers the rest and skips what was done.
    let v2 = deliver(&src, &out);
    assert_eq!(v2["totals"]["discovered"], 300);
    assert_eq!(
        v2["totals"]["skipped"].as_u64(),
        v["totals"]["succeeded"].as_u64()
    );
    outputs_are_whole(&out);
}

#[test]
fn the_library_token_cancels_without_signals() {
    use ferry::pipeline::{CancelReason, CancelToken};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..50 {
        write(&src, &format!("f{i}"), &text(5000, i));
    }
    let config =
        ferry::Config::builder(vec![src], ferry::sink::SinkSpec::Dir(t.path().join("out")))
            .queue(std::num::NonZeroUsize::MIN)
            .build()
            .unwrap();
    let token = CancelToken::new();
    token.cancel(CancelReason::Requested);
    let s = ferry::run(&config, token).unwrap();
    assert_eq!(s.totals.succeeded, 0);
    assert_eq!(s.totals.cancelled, s.totals.discovered);
    assert_eq!(s.exit_code(), ferry::ExitCode::Failures);
    assert_eq!(s.cancelled.as_deref(), Some("cancelled"));
    let out = t.path().join("out");
    assert!(files_under(&out)
        .iter()
        .all(|p| p.extension() != Some("gz".as_ref())));
}
