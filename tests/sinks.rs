//! Sinks end to end: the simulated network (faults, retries, timeouts, latency hiding) and
//! sharding.

mod common;

use common::*;
use predicates::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn tree(dir: &Path, n: usize) -> PathBuf {
    let src = dir.join("s");
    for i in 0..n {
        write(
            &src,
            &format!("d{}/f{i}.txt", i % 5),
            &text(200 + i * 37, i as u64),
        );
    }
    src
}

#[test]
fn sim_without_faults_delivers_everything() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 40);
    let r = ferry()
        .arg(&src)
        .args([
            "--to",
            "sim:latency=1ms,bandwidth=100MiB/s,jitter=1ms,seed=3",
            "--report",
            "-",
        ])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 40);
    assert!(v["sink"].as_str().unwrap().starts_with("sim:"));
    assert!(v["totals"]["bytes_out"].as_u64().unwrap() > 0);
}

#[test]
fn sim_faults_are_retried_until_they_pass() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 60);
    let r = ferry()
        .arg(&src)
        .args([
            "--to",
            "sim:latency=0ms,fail=0.3,seed=7",
            "--retries",
            "20",
            "--retry-backoff",
            "1ms",
        ])
        .args(["--upload-workers", "8", "--report", "-"])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 60);
    let upload = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "upload")
        .unwrap();
    assert!(upload["retries"].as_u64().unwrap() > 0, "{upload}");
}

#[test]
fn sim_that_always_fails_fails_every_file_and_loses_none() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 25);
    let r = ferry()
        .arg(&src)
        .args([
            "--to",
            "sim:latency=0ms,fail=1",
            "--retries",
            "2",
            "--retry-backoff",
            "1ms",
            "--report",
            "-",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "simulated network failure (gave up after 2 retries)",
        ));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["failed"], 25);
    assert_eq!(v["failures"].as_array().unwrap().len(), 25);
    assert_eq!(v["failures"][0]["stage"], "upload");
}

#[test]
fn a_stalled_upload_hits_the_task_timeout_and_the_run_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 3);
    let r = ferry()
        .arg(&src)
        .args([
            "--to",
            "sim:latency=1h",
            "--task-timeout",
            "50ms",
            "--report",
            "-",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "timed out after 50ms (--task-timeout)",
        ));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["failed"], 3);
}

#[test]
fn bad_sim_settings_are_usage_errors() {
    for spec in [
        "sim:fail=1.5",
        "sim:latency=fast",
        "sim:colour=red",
        "sim:bandwidth=0",
    ] {
        ferry()
            .arg(".")
            .args(["--to", spec])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--to"));
    }
}

#[test]
fn shards_split_the_files_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 80);
    let mut seen = Vec::new();
    for k in 0..4 {
        let out = t.path().join(format!("out{k}"));
        ferry()
            .arg(&src)
            .arg(format!("--shard={k}/4"))
            .arg("--to")
            .arg(&out)
            .assert()
            .success();
        for f in files_under(&out) {
            if f.extension().is_some_and(|e| e == "gz") {
                gunzip(&out.join(&f));
                seen.push(f);
            }
        }
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 80, "every file exactly once");
    assert_eq!(unique.len(), 80);
    ferry().arg(&src).args(["--shard", "4/4"]).assert().code(2);
}

/// `--fsync` makes each link durable too: after an output is linked into its directory
/// (through the directory's handle), that directory is fsynced by the same worker, through
/// the same handle, before it links anything else (watched by strace, one trace file per
/// thread, each in its own order).
#[test]
#[cfg_attr(not(ferry_test_strace), ignore = "needs strace")]
fn fsync_syncs_each_output_directory_after_the_rename() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 20);
    let out = t.path().join("out");
    let traces = t.path().join("trace");
    let status = std::process::Command::new("strace")
        .args([
            "-ff",
            "-qq",
            "-e",
            "trace=fsync,linkat,renameat,renameat2",
            "-o",
        ])
        .arg(&traces)
        .arg(assert_cmd::cargo::cargo_bin("ferry"))
        .args(["--progress", "never", "-q", "--fsync"])
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(outputs_are_whole(&out), 20);
    let mut linked_and_synced = 0;
    for trace in std::fs::read_dir(t.path()).unwrap() {
        let trace = trace.unwrap().path();
        if !trace
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("trace.")
        {
            continue;
        }
        let text = std::fs::read_to_string(&trace).unwrap();
        // The directory handle of this thread's last link of an output, not yet fsynced.
        let mut pending: Option<i32> = None;
        for line in text.lines() {
            let args: Vec<&str> = line
                .split_once('(')
                .map_or("", |(_, a)| a)
                .split(", ")
                .collect();
            if (line.starts_with("linkat(") || line.starts_with("renameat"))
                && line.ends_with("= 0")
                && line.contains(".gz\"")
            {
                assert_eq!(
                    pending,
                    None,
                    "{}: a link before the last was synced",
                    trace.display()
                );
                pending = Some(args[2].parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("fsync(") {
                let fd: i32 = rest.split(')').next().unwrap().parse().unwrap();
                if pending == Some(fd) && line.ends_with("= 0") {
                    pending = None;
                    linked_and_synced += 1;
                }
            }
        }
        assert_eq!(
            pending,
            None,
            "{}: a link was never followed by an fsync of its directory",
            trace.display()
        );
    }
    assert_eq!(linked_and_synced, 20);
}

/// The upload stage's entry in a report.
fn upload_stage(v: &serde_json::Value) -> &serde_json::Value {
    let stages = v["stages"].as_array().unwrap();
    stages.iter().find(|s| s["name"] == "upload").unwrap()
}

#[test]
fn into_a_throttling_store_the_limit_adapts_and_everything_arrives() {
    // The store refuses above 6 requests in flight; ferry starts at 128 in flight, so it
    // is throttled at once, and must cut back and still deliver every file.
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 300);
    let r = ferry()
        .arg(&src)
        .args(["--to", "sim:latency=5ms,throttle=6", "--report", "-"])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 300);
    let up = upload_stage(&v);
    assert!(up["retries"].as_u64().unwrap() > 0, "{up}");
    let limit = &up["limit"];
    assert_eq!(limit["adaptive"], true, "{up}");
    let changes = limit["changes"].as_array().unwrap();
    assert!(!changes.is_empty(), "{up}");
    // It was cut back from where it started (its peak: it never grew here) at least twice.
    let lowest = changes
        .iter()
        .map(|c| c[1].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(lowest * 4 <= limit["peak"].as_u64().unwrap(), "{up}");
    // The summary says so too.
    let r = ferry()
        .arg(&src)
        .args(["--to", "sim:latency=1ms"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&r.get_output().stderr).to_string();
    assert!(
        text.contains("upload adapted its requests in flight"),
        "{text}"
    );
}

#[test]
fn upload_workers_pins_the_limit_and_a_local_directory_keeps_two() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path(), 20);
    let r = ferry()
        .arg(&src)
        .args(["--to", "sim:latency=1ms", "--upload-workers", "5"])
        .args(["--report", "-"])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    let up = upload_stage(&v);
    assert_eq!(up["workers"], 5, "{up}");
    assert_eq!(up["limit"]["adaptive"], false, "{up}");
    assert_eq!(up["limit"]["peak"], 5, "{up}");
    let r = ferry()
        .arg(&src)
        .args(["--to"])
        .arg(format!("dir:{}", t.path().join("out").display()))
        .args(["--report", "-"])
        .assert()
        .success();
    let up = upload_stage(&report(&r.get_output().stdout)).clone();
    assert_eq!(up["workers"], 2, "{up}");
    assert!(up.get("limit").is_none(), "{up}");
}

/// 1,024 requests in flight need no 1,024 threads: each small file's commit waits for the
/// store without a thread of ferry's, so the upload stage keeps 1,024 in flight on a few.
#[test]
fn a_thousand_requests_in_flight_on_a_few_threads() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..3_072 {
        write(
            &src,
            &format!("d{}/f{i}", i % 8),
            format!("{i}\n").as_bytes(),
        );
    }
    let r = ferry()
        .arg(&src)
        .args(["--to", "sim:latency=200ms", "--upload-workers", "1024"])
        .args(["--report", "-"])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 3_072);
    let up = upload_stage(&v);
    assert_eq!(up["peak_in_flight"], 1024, "{up}");
    let threads = up["threads"].as_u64().unwrap();
    assert!(threads <= 64, "{threads} threads: {up}");
}

/// `--bwlimit` caps what all upload workers send together: 6 MiB of incompressible data
/// at 4 MiB/s take at least the time the cap allows (beyond one burst); a cap of 0 is a
/// usage error. (Its accuracy, ±5 %, is measured by a script, not here.)
#[test]
fn bwlimit_caps_what_the_upload_workers_send_together() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    for i in 0..6 {
        let mut bytes = noise(1 << 20);
        bytes[0] = i as u8;
        write(&src, &format!("f{i}.bin"), &bytes);
    }
    let r = ferry()
        .arg(&src)
        .args([
            "--to",
            "sim:",
            "--bwlimit",
            "4MiB/s",
            "--upload-workers",
            "8",
        ])
        .args(["--report", "-"])
        .assert()
        .success();
    let rep = report(&r.get_output().stdout);
    let sent = rep["totals"]["bytes_out"].as_f64().unwrap();
    let took = rep["duration_s"].as_f64().unwrap();
    let least =
        (sent - f64::from(256u32 << 10).max(0.4 * f64::from(1u32 << 20))) / f64::from(4u32 << 20);
    assert!(
        took >= least,
        "{sent} bytes in {took} s: faster than 4 MiB/s allows ({least} s)"
    );
    ferry()
        .arg(&src)
        .args(["--to", "sim:", "--bwlimit", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--bwlimit"));
}

/// `--metrics-addr` serves the run's metrics for Prometheus while it runs: scraped with a
/// plain HTTP GET once the first file is done, it shows that file succeeded and every
/// stage; a port in use is a setup error before anything is read.
#[test]
fn metrics_are_served_for_prometheus_while_the_run_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    for i in 0..40 {
        write(&src, &format!("f{i}.log"), &text(2_000, i));
    }
    let mut run = Running::spawn([
        src.to_str().unwrap(),
        "--to",
        "sim:latency=100ms",
        "--upload-workers",
        "1",
        "-v",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let line = run.wait_until("the metrics address", |l| l.contains("[metrics] serving"));
    let addr = metrics_addr(&line);
    run.wait_for("[done]");
    let body = scrape(&addr);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    let succeeded: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("ferry_files_total{outcome=\"succeeded\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!((1..40).contains(&succeeded), "{body}");
    for stage in ["walk", "load", "compress", "upload", "record"] {
        let want = format!("ferry_stage_utilisation_ratio{{stage=\"{stage}\"}}");
        assert!(body.contains(&want), "{want}: {body}");
    }
    // The same address while it is taken: a setup error, nothing read.
    ferry()
        .arg(&src)
        .args(["--to", "sim:", "--metrics-addr", &addr])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--metrics-addr"));
    let (status, _, _) = run.finish();
    assert!(status.success());
}
