//! The gs:// sink writing for real: object_store's GCS client speaks GCS's XML API, whose
//! object, listing and multipart calls are S3's, so the in-process S3 server (taking
//! unsigned requests, as an emulator's OAuth-less client sends them) stores what it
//! sends; what arrived is read back from the server's own directory, not through ferry.
#![cfg(feature = "gcs")]

mod common;
#[path = "common/damaging_proxy.rs"]
mod damaging_proxy;
#[path = "common/s3_server.rs"]
#[allow(dead_code)]
mod s3_server;

use common::*;
use s3_server::TestServer;

/// A service account key that tells object_store to skip OAuth (what emulators need).
const GCS_KEY: &str =
    r#"{"private_key":"k","private_key_id":"k","client_email":"ferry@test","disable_oauth":true}"#;

#[test]
fn gcs_single_and_multipart_uploads_arrive_whole() {
    let server = TestServer::start_unsigned("ferry-gcs");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write(&src, "a/b.log", &text(30_000, 1));
    write(&src, "empty", b"");
    let big = noise(12 << 20);
    write(&src, "big.bin", &big);
    let gs = |c: &mut assert_cmd::Command| {
        c.env("GOOGLE_SERVICE_ACCOUNT_KEY", GCS_KEY)
            .args(["--endpoint-url", &server.endpoint]);
    };
    let mut run = ferry();
    gs(&mut run);
    let r = run
        .env("FERRY_S3_PART_SIZE", (5u64 << 20).to_string())
        .arg(&src)
        .args(["--to", "gs://ferry-gcs/run", "--report", "-", "-vv"])
        .assert();
    let out = r.get_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(report(&out.stdout)["totals"]["succeeded"], 3, "{err}");
    let at = |k: &str| server.object_path("ferry-gcs", &format!("run/data/{k}"));
    assert_eq!(gunzip(&at("a/b.log.gz")), text(30_000, 1));
    assert!(gunzip(&at("empty.gz")).is_empty());
    assert_eq!(gunzip(&at("big.bin.gz")), big);
    // The big one went as a multipart upload (XML API: POST ?uploads, PUT ?partNumber).
    let log: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            l.replace("%2E", ".")
                .replace("%2F", "/")
                .replace("%2D", "-")
        })
        .collect();
    let big_calls = |what: &str| {
        log.iter()
            .filter(|l| l.contains("big.bin.gz") && l.contains(what))
            .count()
    };
    assert_eq!(big_calls("uploads"), 1, "{log:#?}");
    assert!(big_calls("partNumber=") >= 2, "{log:#?}");
    // Stored as a .gz file: its type, no Content-Encoding.
    let a = server.attributes("ferry-gcs", "run/data/a/b.log.gz");
    assert_eq!(a["content_type"], "application/gzip", "{a}");
    assert!(a["content_encoding"].is_null(), "{a}");

    // A rerun skips all three from one listing; verify and restore read them back.
    let mut rerun = ferry();
    gs(&mut rerun);
    rerun
        .arg(&src)
        .args(["--to", "gs://ferry-gcs/run"])
        .assert()
        .success()
        .stderr(predicates::str::contains("3 skipped"));
    let sub = |name: &str| {
        let mut c = assert_cmd::Command::cargo_bin("ferry").unwrap();
        c.args([name, "--progress", "never"])
            .env("GOOGLE_SERVICE_ACCOUNT_KEY", GCS_KEY)
            .args(["--endpoint-url", &server.endpoint]);
        c
    };
    sub("verify")
        .args(["--to", "gs://ferry-gcs/run"])
        .assert()
        .success()
        .stderr(predicates::str::contains("verified 3 objects: 3 ok, 0 bad"));
    let back = t.path().join("back");
    sub("restore")
        .args(["--from", "gs://ferry-gcs/run"])
        .arg(&back)
        .assert()
        .success();
    assert_eq!(std::fs::read(back.join("data/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(back.join("data/a/b.log")).unwrap(),
        text(30_000, 1)
    );
}

/// A body damaged on the way to GCS (one byte flipped by a proxy) is stored as it arrived,
/// since no checksum object_store can send with a GCS PUT is checked there; ferry compares
/// the ETag GCS answers (the MD5 of what it stored) with the MD5 of what it sent, sends
/// the object again, and it arrives right.
#[test]
fn a_body_damaged_on_the_way_to_gcs_is_found_by_its_md5_and_sent_again() {
    let server = TestServer::start_unsigned("ferry-gcs-damage");
    let (endpoint, damaged) = damaging_proxy::damaging_proxy(&server.endpoint);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("d");
    write(&src, "a.log", &text(50_000, 7));
    let r = ferry()
        .env("GOOGLE_SERVICE_ACCOUNT_KEY", GCS_KEY)
        .args(["--endpoint-url", &endpoint])
        .arg(&src)
        .args(["--to", "gs://ferry-gcs-damage/run", "--report", "-", "-vv"])
        .assert();
    let out = r.get_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        damaged.load(std::sync::atomic::Ordering::SeqCst),
        "the proxy damaged a body"
    );
    assert!(err.contains("MD5"), "the retry says why: {err}");
    let rep = report(&out.stdout);
    assert_eq!(rep["totals"]["succeeded"], 1, "{err}");
    let at = server.object_path("ferry-gcs-damage", "run/d/a.log.gz");
    assert_eq!(gunzip(&at), text(50_000, 7));
}
