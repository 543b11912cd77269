//! The s3:// sink against a real S3-compatible server on 127.0.0.1, verified with an
//! independent client (awscli). `.ci/run` starts the server (moto) and sets
//! `FERRY_TEST_S3_ENDPOINT` and `FERRY_TEST_S3_BUCKET`; without them these tests say so
//! and return.
#![cfg(feature = "s3")]

mod common;

use common::*;
use predicates::prelude::*;
use std::path::Path;
use std::process::Command;

struct S3 {
    endpoint: String,
    bucket: String,
}

fn server() -> Option<S3> {
    match (
        std::env::var("FERRY_TEST_S3_ENDPOINT"),
        std::env::var("FERRY_TEST_S3_BUCKET"),
    ) {
        (Ok(endpoint), Ok(bucket)) => Some(S3 { endpoint, bucket }),
        _ => {
            eprintln!("skipped: FERRY_TEST_S3_ENDPOINT / FERRY_TEST_S3_BUCKET not set (.ci/run sets them)");
            None
        }
    }
}

impl S3 {
    /// Runs ferry from `src` to `prefix`, expects success, returns the JSON report.
    fn deliver(&self, src: &Path, prefix: &str) -> serde_json::Value {
        let r = self
            .ferry()
            .arg(src)
            .arg("--to")
            .arg(self.url(prefix))
            .args(["--report", "-"])
            .assert()
            .success();
        report(&r.get_output().stdout)
    }

    fn ferry(&self) -> assert_cmd::Command {
        let mut c = ferry();
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1");
        c
    }

    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// awscli, the independent client.
    fn aws(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("aws")
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .expect("awscli is installed by .ci/run");
        assert!(
            out.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn download(&self, prefix: &str, to: &Path) {
        self.aws(&[
            "s3",
            "cp",
            "--recursive",
            "--quiet",
            &self.url(prefix),
            to.to_str().unwrap(),
        ]);
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.aws(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            &self.bucket,
            "--prefix",
            prefix,
            "--output",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut keys: Vec<String> = v["Contents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| o["Key"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn uploads_round_trip_through_an_independent_client_and_reruns_skip() {
    let Some(s3) = server() else { return };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write(&src, "a/b.log", &text(30_000, 1));
    write(&src, "c.txt", b"small");
    write(&src, "empty", b"");
    // Bigger than one 8 MiB part even compressed: a multipart upload.
    let big = noise(12 << 20);
    write(&src, "big.bin", &big);
    let prefix = unique("rt");
    assert_eq!(s3.deliver(&src, &prefix)["totals"]["succeeded"], 4);

    let down = t.path().join("down");
    s3.download(&prefix, &down);
    assert_eq!(gunzip(&down.join("data/a/b.log.gz")), text(30_000, 1));
    assert_eq!(gunzip(&down.join("data/c.txt.gz")), b"small");
    assert!(gunzip(&down.join("data/empty.gz")).is_empty());
    assert_eq!(gunzip(&down.join("data/big.bin.gz")), big);

    let head = s3.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        &s3.bucket,
        "--key",
        &format!("{prefix}/data/c.txt.gz"),
    ]);
    let h: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(h["ContentEncoding"], "gzip");
    assert_eq!(h["ContentType"], "application/gzip");
    assert_eq!(h["Metadata"]["ferry-source-size"], "5");
    let mut c = flate2::Crc::new();
    c.update(b"small");
    assert_eq!(
        h["Metadata"]["ferry-source-crc32"],
        format!("{:08x}", c.sum())
    );

    assert_eq!(s3.deliver(&src, &prefix)["totals"]["skipped"], 4);
}

#[test]
fn a_missing_bucket_is_a_setup_error_before_any_work() {
    let Some(s3) = server() else { return };
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/x", b"x");
    s3.ferry()
        .arg(t.path().join("d"))
        .args(["--to", "s3://no-such-bucket-for-ferry/x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "bucket 'no-such-bucket-for-ferry' does not exist",
        ));
}

#[test]
fn an_unreachable_endpoint_is_a_setup_error() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/x", b"x");
    ferry()
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .arg(t.path().join("d"))
        .args(["--to", "s3://b/x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot use output s3://b/x"));
}

#[test]
fn four_shards_into_one_bucket_deliver_every_file_once() {
    let Some(s3) = server() else { return };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..60 {
        write(&src, &format!("d{}/f{i}", i % 4), &text(100 + i, i as u64));
    }
    let prefix = unique("shards");
    let children: Vec<_> = (0..4)
        .map(|k| {
            let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"));
            c.arg(&src)
                .arg(format!("--shard={k}/4"))
                .arg("--to")
                .arg(s3.url(&prefix))
                .args(["--progress", "never", "-q", "--report", "-"])
                .env("AWS_ENDPOINT_URL", &s3.endpoint)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .stdout(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut delivered = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        delivered += report(&out.stdout)["totals"]["succeeded"].as_u64().unwrap();
    }
    assert_eq!(delivered, 60, "each file delivered by exactly one shard");
    let keys: Vec<String> = s3
        .keys(&prefix)
        .into_iter()
        .filter(|k| k.ends_with(".gz"))
        .collect();
    assert_eq!(keys.len(), 60);
    // Each shard keeps its own manifest, so shards never overwrite each other's records.
    let manifests = s3.keys(&format!("{prefix}/.ferry-manifest"));
    assert_eq!(manifests.len(), 4, "{manifests:?}");
}

#[test]
fn bad_credentials_are_a_setup_error_that_says_so() {
    let Ok(endpoint) = std::env::var("FERRY_TEST_S3_AUTH_ENDPOINT") else {
        eprintln!("skipped: FERRY_TEST_S3_AUTH_ENDPOINT not set (.ci/run sets it)");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/x", b"x");
    ferry()
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .arg(t.path().join("d"))
        .args(["--to", "s3://any-bucket/x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "access denied to bucket 'any-bucket'",
        ));
}
