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
