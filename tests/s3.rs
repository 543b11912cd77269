//! The s3:// sink against a real S3 server, read back without going through ferry.
//!
//! By default the server is in this process (`s3s-fs` on 127.0.0.1, SigV4 checked; see
//! `common/s3_server.rs`) and what it stored is read from its directory. With
//! `FERRY_TEST_S3_ENDPOINT` and `FERRY_TEST_S3_BUCKET` set (`.ci/run` points them at moto),
//! the same tests run against that server instead and read back with awscli, a second,
//! independent implementation on both ends; `FERRY_TEST_S3_AUTH_ENDPOINT` then names a
//! server that checks credentials.
#![cfg(feature = "s3")]

mod common;
#[path = "common/damaging_proxy.rs"]
mod damaging_proxy;
#[path = "common/s3_server.rs"]
mod s3_server;

use common::*;
use damaging_proxy::damaging_proxy;
use predicates::prelude::*;
use s3_server::{TestServer, ACCESS_KEY, SECRET_KEY};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};

/// Starts `ferry ARGS` (harness: stderr events, signals) against the S3 `endpoint`, with the
/// test key pair.
fn spawn_with_keys<const N: usize>(args: [&str; N], endpoint: &str) -> Running {
    Running::spawn_env(
        args,
        [
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ],
    )
}

/// The bucket of the in-process server.
const BUCKET: &str = "ferry-test";

/// Where the tests deliver, and how they read back.
struct S3 {
    endpoint: String,
    bucket: String,
    /// The in-process server, or `None` for an external one read with awscli.
    local: Option<&'static TestServer>,
}

/// The server under test: external when the environment names one, else in-process.
fn s3() -> S3 {
    match (
        std::env::var("FERRY_TEST_S3_ENDPOINT"),
        std::env::var("FERRY_TEST_S3_BUCKET"),
    ) {
        (Ok(endpoint), Ok(bucket)) => S3 {
            endpoint,
            bucket,
            local: None,
        },
        _ => in_process(),
    }
}

/// The in-process server, whatever the environment names: for a test that needs what
/// only it does (checking a body against its signed hash and checksum).
fn in_process() -> S3 {
    static LOCAL: OnceLock<TestServer> = OnceLock::new();
    let server = LOCAL.get_or_init(|| TestServer::start(BUCKET));
    S3 {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.to_string(),
        local: Some(server),
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
        self.with_keys(ferry())
    }

    /// `ferry SUBCOMMAND …` (`ferry()` puts its flags before the subcommand) with the keys.
    fn subcommand(&self, name: &str) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("ferry").unwrap();
        c.args([name, "--progress", "never"]);
        self.with_keys(c)
    }

    /// `c` pointed at this server with the test key pair.
    fn with_keys(&self, mut c: assert_cmd::Command) -> assert_cmd::Command {
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1");
        c
    }

    fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// awscli, the independent client of an external server.
    fn aws(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("aws")
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
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

    /// Copies every object under `prefix` into `to`, keyed as stored.
    fn download(&self, prefix: &str, to: &Path) {
        let Some(local) = self.local else {
            let url = self.url(prefix);
            self.aws(&[
                "s3",
                "cp",
                "--recursive",
                "--quiet",
                &url,
                to.to_str().unwrap(),
            ]);
            return;
        };
        for key in self.keys(prefix) {
            let rel = key.strip_prefix(&format!("{prefix}/")).unwrap();
            let dest = to.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(local.object_path(&self.bucket, &key), dest).unwrap();
        }
    }

    /// Every key under `prefix`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
        if let Some(local) = self.local {
            let root = local.root.join(&self.bucket);
            let mut keys: Vec<String> = files_under(&root)
                .into_iter()
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|k| k.starts_with(prefix))
                .collect();
            keys.sort();
            return keys;
        }
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

    /// (content encoding, content type, user metadata) of an object.
    fn head(&self, key: &str) -> (String, String, serde_json::Value) {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        if let Some(local) = self.local {
            let a = local.attributes(&self.bucket, key);
            return (
                text(&a["content_encoding"]),
                text(&a["content_type"]),
                a["user_metadata"].clone(),
            );
        }
        let out = self.aws(&[
            "s3api",
            "head-object",
            "--bucket",
            &self.bucket,
            "--key",
            key,
        ]);
        let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            text(&h["ContentEncoding"]),
            text(&h["ContentType"]),
            h["Metadata"].clone(),
        )
    }

    /// Multipart uploads of `key` begun and neither completed nor aborted.
    fn open_uploads(&self, key: &str) -> usize {
        if let Some(local) = self.local {
            return local.open_uploads(&self.bucket, key);
        }
        let out = self.aws(&[
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            &self.bucket,
            "--prefix",
            key,
            "--output",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["Uploads"].as_array().map_or(0, Vec::len)
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
    let s3 = s3();
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

    let (encoding, content_type, meta) = s3.head(&format!("{prefix}/data/c.txt.gz"));
    // A .gz file, stored as one: no Content-Encoding that would make clients decode it.
    assert_eq!(encoding, "");
    assert_eq!(content_type, "application/gzip");
    assert_eq!(meta["ferry-source-size"], "5");
    // The source's permission bits, in octal, as rclone's --metadata keeps a mode.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(src.join("c.txt")).unwrap().permissions(),
    ) & 0o7777;
    assert_eq!(meta["ferry-source-mode"], format!("{mode:04o}"));
    let mut c = flate2::Crc::new();
    c.update(b"small");
    assert_eq!(meta["ferry-source-crc32"], format!("{:08x}", c.sum()));
    let (_, _, meta) = s3.head(&format!("{prefix}/data/big.bin.gz"));
    assert_eq!(meta["ferry-source-size"], (12 << 20).to_string());

    assert_eq!(s3.deliver(&src, &prefix)["totals"]["skipped"], 4);
}

#[test]
fn a_missing_bucket_is_a_setup_error_before_any_work() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/x", b"x");
    s3.ferry()
        .arg(t.path().join("d"))
        .args(["--to", "s3://no-such-bucket-for-ferry/x"])
        .assert()
        .code(3)
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
        .args(["--to", "s3://bkt/x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot use output s3://bkt/x"));
}

#[test]
fn four_shards_into_one_bucket_deliver_every_file_once() {
    let s3 = s3();
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
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
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

/// A plan stored in the bucket, two planned shards, then one verify and one report for
/// both: the shard machinery over an object store.
#[test]
fn planned_shards_verify_and_report_through_the_object_store() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..40u64 {
        write(
            &src,
            &format!("d{}/f{i}", i % 3),
            &text(200 + i as usize * 997, i),
        );
    }
    let prefix = unique("planned");
    let bin = || s3.with_keys(assert_cmd::Command::cargo_bin("ferry").unwrap());
    let plan = bin()
        .args(["plan", "-q", "--shards", "2", "--to", &s3.url(&prefix)])
        .arg(&src)
        .assert()
        .success();
    let id = String::from_utf8_lossy(&plan.get_output().stdout)
        .trim()
        .to_string();
    for k in 0..2 {
        s3.ferry()
            .args(["--plan", &id, "--shard", &format!("{k}/2"), "-q"])
            .arg(&src)
            .arg("--to")
            .arg(s3.url(&prefix))
            .assert()
            .success();
    }
    let v = s3
        .subcommand("verify")
        .args(["--report", "-", "--to", &s3.url(&prefix)])
        .assert()
        .success();
    let found: serde_json::Value = serde_json::from_slice(&v.get_output().stdout).unwrap();
    assert_eq!(found["checked"], 40, "{found}");
    let r = bin()
        .args(["report", "--json", &s3.url(&prefix)])
        .assert()
        .success();
    let c: serde_json::Value = serde_json::from_slice(&r.get_output().stdout).unwrap();
    assert_eq!(c["totals"]["succeeded"], 40, "{c}");
    assert_eq!(c["shards"].as_array().unwrap().len(), 2, "{c}");
    assert!(c["unfinished"].as_array().unwrap().is_empty(), "{c}");
}

#[test]
fn bad_credentials_are_a_setup_error_that_says_so() {
    let s3 = s3();
    // An external server checks credentials only where .ci/run started one that does.
    let endpoint = match s3.local {
        Some(_) => s3.endpoint.clone(),
        None => std::env::var("FERRY_TEST_S3_AUTH_ENDPOINT")
            .expect("FERRY_TEST_S3_AUTH_ENDPOINT names a credential-checking server"),
    };
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/x", b"x");
    ferry()
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000")
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .arg(t.path().join("d"))
        .args(["--to", &s3.url("x")])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(format!(
            "access denied to bucket '{}'",
            s3.bucket
        )));
}

#[test]
fn cancelling_a_multipart_upload_aborts_it_and_leaves_no_object() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "big.bin", &noise(40 << 20));
    let prefix = unique("cancel");
    let url = s3.url(&prefix);
    // A 4 MiB budget: when the reader is at segment 20, at least 16 MiB have been
    // written, so two 8 MiB parts of the multipart upload are on the server.
    let args = [
        src.to_str().unwrap(),
        "--to",
        &url,
        "-vv",
        "--memory",
        "4MiB",
    ];
    let mut ferry = spawn_with_keys(args, s3.endpoint.as_str());
    ferry.wait_for("big.bin segment 20/40");
    ferry.signal(libc::SIGINT);
    let (status, err, _) = ferry.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("1 cancelled"), "{err}");
    assert!(s3.keys(&prefix).is_empty(), "{:?}", s3.keys(&prefix));
    let key = format!("{prefix}/s/big.bin.gz");
    assert_eq!(
        s3.open_uploads(&key),
        0,
        "the multipart upload was not aborted"
    );
}

#[test]
fn a_rerun_confirms_unchanged_files_with_one_listing_not_a_request_each() {
    let mut s3 = s3();
    if s3.local.is_some() {
        // A server of its own: the other tests' requests must not be counted.
        let own: &'static TestServer = Box::leak(Box::new(TestServer::start(BUCKET)));
        s3.endpoint = own.endpoint.clone();
        s3.local = Some(own);
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    const N: u64 = 2500;
    for i in 0..N {
        write(
            &src,
            &format!("d{}/f{i}", i % 5),
            format!("{i}\n").as_bytes(),
        );
    }
    let prefix = unique("listing");
    assert_eq!(s3.deliver(&src, &prefix)["totals"]["succeeded"], N);
    // Requests as the server counts them in-process; as ferry counts them (-vv) against
    // an external server.
    let before = s3
        .local
        .map(|l| l.requests.load(std::sync::atomic::Ordering::SeqCst));
    let r = s3
        .ferry()
        .arg(&src)
        .args(["-vv", "--report", "-", "--to", &s3.url(&prefix)])
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["skipped"], N);
    let requests = match (s3.local, before) {
        (Some(l), Some(b)) => l.requests.load(std::sync::atomic::Ordering::SeqCst) - b,
        _ => {
            let err = String::from_utf8_lossy(&r.get_output().stderr).into_owned();
            let line = err
                .lines()
                .find(|l| l.contains("[sink] "))
                .unwrap()
                .to_string();
            line.split_whitespace()
                .rev()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        }
    };
    eprintln!("{requests} requests to confirm {N} unchanged files");
    // A listing page holds 1,000 keys; the rest is setup (bucket check, manifest, journal)
    // and the history's lease (create, read back, checked before the journal is folded).
    assert!(
        requests <= N / 1000 + 11,
        "{requests} requests to confirm {N} unchanged files"
    );
}

#[test]
fn a_multipart_upload_of_many_small_parts_round_trips() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("p");
    let big = noise(17 << 20);
    write(&src, "parts.bin", &big);
    let prefix = unique("parts");
    // 5 MiB parts (S3's smallest): four parts, the last one short.
    let r = s3
        .ferry()
        .env("FERRY_S3_PART_SIZE", (5u64 << 20).to_string())
        .arg(&src)
        .args(["--report", "-", "--to", &s3.url(&prefix)])
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["succeeded"], 1);
    let down = t.path().join("down");
    s3.download(&prefix, &down);
    assert_eq!(gunzip(&down.join("p/parts.bin.gz")), big);
}

/// A TCP proxy to `upstream` (`http://host:port`) that closes its first `drop_first`
/// connections at once, as a flaky network would, and relays the rest; once the returned
/// flag is set it stops answering altogether (holds every connection, relays nothing), as
/// a store that hangs would.
fn proxy(upstream: &str, drop_first: usize) -> (String, Arc<AtomicBool>) {
    let (url, freeze, _) = recording_proxy(upstream, drop_first);
    (url, freeze)
}

/// [`proxy`], also keeping every byte the client sent (the requests, headers and all).
fn recording_proxy(
    upstream: &str,
    drop_first: usize,
) -> (String, Arc<AtomicBool>, Arc<std::sync::Mutex<Vec<u8>>>) {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = sent.clone();
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_start_matches("http://").to_string();
    let frozen = Arc::new(AtomicBool::new(false));
    let hang = |frozen: &AtomicBool| {
        if frozen.load(SeqCst) {
            // Hold the connection for good: nothing is ever sent on it.
            let (_keep, never) = crossbeam_channel::bounded::<()>(0);
            let _ = never.recv();
        }
    };
    let relay = move |mut from: TcpStream,
                      mut to: TcpStream,
                      frozen: Arc<AtomicBool>,
                      record: Option<Arc<std::sync::Mutex<Vec<u8>>>>| {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(r) = &record {
                r.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            hang(&frozen);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    let flag = frozen.clone();
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(client) = conn else { continue };
            if i < drop_first {
                drop(client);
                continue;
            }
            let (flag, upstream, record) = (flag.clone(), upstream.clone(), record.clone());
            std::thread::spawn(move || {
                hang(&flag);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    return;
                };
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let back = flag.clone();
                std::thread::spawn(move || relay(s, c, back, None));
                relay(client, server, flag, Some(record));
            });
        }
    });
    (format!("http://{addr}"), frozen, sent)
}

#[test]
fn cancelling_while_the_store_stops_answering_still_ends_the_run() {
    let s3 = s3();
    let (endpoint, freeze) = proxy(&s3.endpoint, 0);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "big.bin", &noise(40 << 20));
    let url = s3.url(&unique("hang"));
    let args = [
        src.to_str().unwrap(),
        "--to",
        &url,
        "-vv",
        "--memory",
        "4MiB",
    ];
    let mut ferry = spawn_with_keys(args, endpoint.as_str());
    // Parts are on the server (see the cancel test above) when the store stops answering.
    ferry.wait_for("big.bin segment 20/40");
    freeze.store(true, SeqCst);
    ferry.signal(libc::SIGINT);
    // The part in flight ends with the cancel; the abort gets no answer and is given up
    // after its bound, with a warning naming the object. (The watchdog fails a hang.)
    let (status, err, _) = ferry.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("big.bin.gz may be left incomplete"), "{err}");
    assert!(err.contains("1 cancelled"), "{err}");
}

#[test]
fn retries_follow_the_flags_show_at_vv_and_are_counted() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("r");
    for i in 0..3 {
        write(&src, &format!("f{i}"), &text(1000, i));
    }
    let url = s3.url(&unique("retry"));
    // Two connections dropped: the store's client retries them (up to --retries).
    let r = s3
        .ferry()
        .env("AWS_ENDPOINT_URL", proxy(&s3.endpoint, 2).0)
        .arg(&src)
        .args([
            "--retries",
            "3",
            "--retry-backoff",
            "10ms",
            "-vv",
            "--report",
            "-",
        ])
        .args(["--to", &url])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 3);
    let retries: u64 = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["retries"].as_u64().unwrap())
        .sum();
    assert!(retries >= 2, "{v}");
    let err = String::from_utf8_lossy(&r.get_output().stderr);
    assert!(
        err.contains("[s3] ") && err.contains("retry 1 of 3"),
        "{err}"
    );
    // With --retries 0 the first dropped connection is final: the sink cannot be used.
    s3.ferry()
        .env("AWS_ENDPOINT_URL", proxy(&s3.endpoint, 2).0)
        .arg(&src)
        .args(["--retries", "0", "--to", &url])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot use output"));
}

/// ferry with no AWS_* variable from this process, HOME set to `home`: what a user with
/// only `~/.aws` files (or nothing at all) runs.
fn ferry_without_aws_env(home: &Path) -> assert_cmd::Command {
    let mut c = ferry();
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home);
    c
}

/// `--endpoint-url`, `--storage-class` and the server-side encryption variables reach the
/// server as the headers S3 defines (seen by a proxy in front of it); the objects read
/// back whole. Against moto, awscli also reads the class and encryption back.
#[test]
fn endpoint_storage_class_and_encryption_reach_the_server() {
    let s3 = s3();
    let (endpoint, _, sent) = recording_proxy(&s3.endpoint, 0);
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("enc");
    write(&src, "small.txt", &text(2_000, 1));
    write(&src, "big.bin", &noise(9 << 20));
    let prefix = unique("sse");
    // KMS needs a key the server knows; moto has none, so it gets AES256 (S3-managed).
    // The in-process server takes only STANDARD and REDUCED_REDUNDANCY as classes.
    let (sse, key_id, class) = match s3.local {
        Some(_) => ("aws:kms", Some("ferry-test-key"), "REDUCED_REDUNDANCY"),
        None => ("AES256", None, "STANDARD_IA"),
    };
    let mut c = ferry();
    c.env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_SERVER_SIDE_ENCRYPTION", sse);
    if let Some(k) = key_id {
        c.env("AWS_SSE_KMS_KEY_ID", k);
    }
    c.arg(&src)
        .args(["--to", &s3.url(&prefix), "--endpoint-url", &endpoint])
        .args(["--storage-class", class])
        .assert()
        .success()
        .stderr(predicate::str::contains("2 succeeded"));
    let requests = String::from_utf8_lossy(&sent.lock().unwrap()).to_ascii_lowercase();
    // One single PUT and one multipart creation carry them.
    assert!(
        requests
            .matches(&format!(
                "x-amz-storage-class: {}",
                class.to_ascii_lowercase()
            ))
            .count()
            >= 2,
        "{requests}"
    );
    assert!(
        requests
            .matches(&format!(
                "x-amz-server-side-encryption: {}",
                sse.to_ascii_lowercase()
            ))
            .count()
            >= 2
    );
    if let Some(k) = key_id {
        assert!(requests.contains(&format!("x-amz-server-side-encryption-aws-kms-key-id: {k}")));
    }
    let down = t.path().join("down");
    s3.download(&prefix, &down);
    assert_eq!(gunzip(&down.join("enc/small.txt.gz")), text(2_000, 1));
    assert_eq!(gunzip(&down.join("enc/big.bin.gz")), noise(9 << 20));
    if s3.local.is_none() {
        for key in ["enc/small.txt.gz", "enc/big.bin.gz"] {
            let out = s3.aws(&[
                "s3api",
                "head-object",
                "--bucket",
                &s3.bucket,
                "--key",
                &format!("{prefix}/{key}"),
            ]);
            let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(h["StorageClass"], "STANDARD_IA", "{key}: {h}");
            assert_eq!(h["ServerSideEncryption"], "AES256", "{key}: {h}");
        }
    }
}

/// A named profile in `~/.aws` gives keys, region and endpoint; keys in the environment
/// win over the profile's; a profile that is not there is a setup error naming the files.
#[test]
fn aws_profiles_from_the_shared_files_and_their_precedence() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(
        home.join(".aws/credentials"),
        format!(
            "[ferry]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\
             [wrong]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".aws/config"),
        format!(
            "[profile ferry]\nregion = us-east-1\nendpoint_url = {0}\n\
             [profile wrong]\nregion = us-east-1\nendpoint_url = {0}\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let src = t.path().join("p");
    write(&src, "a.txt", &text(3_000, 7));
    let prefix = unique("profile");
    ferry_without_aws_env(&home)
        .arg(&src)
        .args(["--to", &s3.url(&prefix), "--profile", "ferry"])
        .assert()
        .success()
        .stderr(predicate::str::contains("1 succeeded"));
    let down = t.path().join("down");
    s3.download(&prefix, &down);
    assert_eq!(gunzip(&down.join("p/a.txt.gz")), text(3_000, 7));

    // AWS_PROFILE names it as well; the environment's keys beat the profile's wrong ones.
    ferry_without_aws_env(&home)
        .env("AWS_PROFILE", "wrong")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .arg(&src)
        .args(["--to", &s3.url(&unique("precedence"))])
        .assert()
        .success();
    ferry_without_aws_env(&home)
        .arg(&src)
        .args(["--to", &s3.url("x"), "--profile", "nope"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("AWS profile 'nope' is not in"));
}

/// With no credentials anywhere (and, as the AWS CLI's switch says, not on EC2), the setup
/// error names every way to give them.
#[test]
fn missing_credentials_name_every_way_to_give_them() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("p");
    write(&src, "a.txt", b"a");
    ferry_without_aws_env(t.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg(&src)
        .args(["--to", &s3.url("x"), "--endpoint-url", &s3.endpoint])
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("no S3 credentials found")
                .and(predicate::str::contains("AWS_ACCESS_KEY_ID"))
                .and(predicate::str::contains("AWS_PROFILE"))
                .and(predicate::str::contains("~/.aws/credentials"))
                .and(predicate::str::contains("AWS_WEB_IDENTITY_TOKEN_FILE")),
        );
}

/// An object in an archive class cannot be read back until restored: `ferry verify` says
/// so for each such object, instead of a bare 403. (moto enforces archive classes; the
/// in-process server stores every class alike, so this runs where .ci/run starts moto.)
#[test]
fn verify_explains_objects_in_an_archive_class() {
    let s3 = s3();
    if s3.local.is_some() {
        eprintln!("needs a server that enforces archive classes: runs against moto in .ci/run");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("cold");
    write(&src, "a.txt", &text(1_000, 3));
    let prefix = unique("glacier");
    s3.ferry()
        .arg(&src)
        .args(["--to", &s3.url(&prefix), "--storage-class", "GLACIER"])
        .assert()
        .success();
    s3.subcommand("verify")
        .args(["--to", &s3.url(&prefix)])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cold/a.txt.gz: the object is in an archive storage class",
        ))
        .stderr(predicate::str::contains("restore-object"));
}

/// What went to the object store comes back with `ferry restore`, big objects inflated
/// segment by segment, mtimes included; a rerun skips it all.
#[test]
fn restore_from_the_object_store_round_trips() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("r");
    write(&src, "a/b.log", &text(30_000, 9));
    write(&src, "empty", b"");
    write(&src, "big.bin", &noise(5 << 20));
    filetime::set_file_mtime(
        src.join("a/b.log"),
        filetime::FileTime::from_unix_time(1_600_000_000, 42),
    )
    .unwrap();
    let prefix = unique("restore");
    s3.deliver(&src, &prefix);
    let dest = t.path().join("back");
    let restore = || {
        let mut c = s3.subcommand("restore");
        c.args(["--from", &s3.url(&prefix)]).arg(&dest);
        c
    };
    restore()
        .assert()
        .success()
        .stderr(predicate::str::contains("3 succeeded"));
    assert_eq!(
        std::fs::read(dest.join("r/a/b.log")).unwrap(),
        text(30_000, 9)
    );
    assert_eq!(
        std::fs::read(dest.join("r/big.bin")).unwrap(),
        noise(5 << 20)
    );
    assert!(std::fs::read(dest.join("r/empty")).unwrap().is_empty());
    let m = filetime::FileTime::from_last_modification_time(
        &dest.join("r/a/b.log").metadata().unwrap(),
    );
    assert_eq!((m.unix_seconds(), m.nanoseconds()), (1_600_000_000, 42));
    restore()
        .assert()
        .success()
        .stderr(predicate::str::contains("3 skipped"));
}

/// Ctrl-C while a restore waits on a store that stopped answering: the read in flight ends
/// with the cancel, the run exits 130 with the file counted cancelled, and nothing is left
/// under its name or as a temp file.
#[test]
fn interrupting_a_restore_while_the_store_stops_answering_leaves_nothing() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "big.bin", &noise(40 << 20));
    let prefix = unique("restore-hang");
    s3.deliver(&src, &prefix);
    let (endpoint, freeze) = proxy(&s3.endpoint, 0);
    let dest = t.path().join("back");
    let url = s3.url(&prefix);
    let args = [
        "restore",
        "--from",
        &url,
        dest.to_str().unwrap(),
        "-vv",
        "--memory",
        "2MiB",
        "-j",
        "1",
    ];
    let mut ferry = spawn_with_keys(args, endpoint.as_str());
    ferry.wait_for("segments, inflated in parallel");
    freeze.store(true, SeqCst);
    ferry.signal(libc::SIGINT);
    let (status, err, _) = ferry.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("1 cancelled"), "{err}");
    assert!(files_under(&dest).is_empty(), "{:?}", files_under(&dest));
}

/// Issue 21 point 3 on an object store: while one run delivers into a prefix, a second
/// is refused at once (exit 2, naming the first); once the first ends its lease is gone,
/// the second delivers, and the history holds both runs' files.
#[test]
fn a_second_writer_into_one_prefix_is_refused_while_the_first_runs() {
    use std::io::Write;
    let s3 = s3();
    let prefix = unique("lease");
    let t = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(t.path(), &format!("a/f{i}"), format!("a{i}").as_bytes());
        write(t.path(), &format!("b/f{i}"), format!("b{i}").as_bytes());
    }
    let url = s3.url(&prefix);
    let mut a = spawn_with_keys(
        ["--files-from", "-", "-v", "--to", &url],
        s3.endpoint.as_str(),
    );
    let list: String = (0..20)
        .map(|i| format!("{}\n", t.path().join(format!("a/f{i}")).display()))
        .collect();
    let stdin = a.stdin.as_mut().unwrap();
    stdin.write_all(list.as_bytes()).unwrap();
    stdin.flush().unwrap();
    a.wait_for("[done]");
    let b = s3
        .ferry()
        .arg(t.path().join("b"))
        .args(["--to", &url])
        .assert()
        .code(3);
    let err = String::from_utf8_lossy(&b.get_output().stderr).to_string();
    assert!(err.contains("another ferry run"), "{err}");
    assert!(err.contains(&format!("pid {}", a.pid())), "{err}");
    drop(a.stdin.take());
    let (status, err, _) = a.finish();
    assert!(status.success(), "{err}");
    assert!(!s3
        .keys(&prefix)
        .iter()
        .any(|k| k.ends_with(".ferry-lease.json")));
    s3.deliver(&t.path().join("b"), &prefix);
    let dest = t.path().join("dest");
    let r = s3
        .subcommand("restore")
        .args(["--from", &url, "--report", "-"])
        .arg(&dest)
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["succeeded"], 40);
}

/// `python3 -c CODE` with boto3 pointed at the server (`s3` in scope, `bucket` set).
#[cfg(ferry_test_boto3)]
fn boto3(s3: &S3, code: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url={:?}, region_name='us-east-1', \
             aws_access_key_id={ACCESS_KEY:?}, aws_secret_access_key={SECRET_KEY:?})\n\
             bucket = {:?}\n{code}",
            s3.endpoint, s3.bucket
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every client gets the gzip bytes of a `.gz` object with its defaults: boto3, and curl
/// with `--compressed` (as a browser asks), which decodes a body whose Content-Encoding
/// says gzip. An object stored by an earlier build, with that header, still verifies
/// and restores, and verify points it out.
#[test]
#[cfg_attr(not(ferry_test_boto3), ignore = "needs boto3 (PyPI) and curl")]
fn every_client_downloads_the_gzip_bytes_and_old_headers_are_pointed_out() {
    #[cfg(ferry_test_boto3)]
    {
        let s3 = s3();
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("data");
        write(&src, "a.log", &text(20_000, 3));
        write(&src, "b.json", &text(5_000, 4));
        let prefix = unique("clients");
        assert_eq!(s3.deliver(&src, &prefix)["totals"]["succeeded"], 2);
        let key = format!("{prefix}/data/a.log.gz");
        let via_boto3 = boto3(
            &s3,
            &format!(
                "sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key={key:?})['Body'].read())"
            ),
        );
        let gz = t.path().join("a.log.gz");
        std::fs::write(&gz, &via_boto3).unwrap();
        assert_eq!(gunzip(&gz), text(20_000, 3));
        let curl = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                "--compressed",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
            ])
            // s3s wants the payload's hash named, as every S3 client sends it.
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .arg(format!("{}/{}/{key}", s3.endpoint, s3.bucket))
            .output()
            .unwrap();
        assert!(
            curl.status.success(),
            "{}{}",
            String::from_utf8_lossy(&curl.stderr),
            String::from_utf8_lossy(&curl.stdout)
        );
        assert!(
            curl.stdout == via_boto3,
            "curl --compressed got {} bytes, boto3 {}: a Content-Encoding made curl decode",
            curl.stdout.len(),
            via_boto3.len()
        );

        // As an earlier build stored it: the same bytes, with Content-Encoding: gzip.
        boto3(
            &s3,
            &format!(
                "b = s3.get_object(Bucket=bucket, Key={key:?})\n\
                 s3.put_object(Bucket=bucket, Key={key:?}, Body=b['Body'].read(), \
                 ContentType='application/gzip', ContentEncoding='gzip', Metadata=b['Metadata'])"
            ),
        );
        assert_eq!(s3.head(&key).0, "gzip");
        let v = s3
            .subcommand("verify")
            .args(["--to", &s3.url(&prefix), "--report", "-"])
            .assert()
            .success()
            .stderr(predicate::str::contains("verified 2 objects: 2 ok, 0 bad"))
            .stderr(predicate::str::contains(
                "1 of them carry the header 'Content-Encoding: gzip'",
            ));
        let v: serde_json::Value = serde_json::from_slice(&v.get_output().stdout).unwrap();
        assert_eq!(v["encoded"], 1);
        // --fix-headers stores it again, its own bytes, without the header.
        s3.subcommand("verify")
            .args(["--to", &s3.url(&prefix), "--fix-headers"])
            .assert()
            .success()
            .stderr(predicate::str::contains(
                "1 of them were stored again without it (--fix-headers)",
            ));
        assert_eq!(s3.head(&key).0, "", "no Content-Encoding now");
        assert_eq!(s3.head(&key).1, "application/gzip");
        let again = boto3(
            &s3,
            &format!(
                "sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key={key:?})['Body'].read())"
            ),
        );
        assert_eq!(again, via_boto3, "the same bytes");
        s3.subcommand("verify")
            .args(["--to", &s3.url(&prefix)])
            .assert()
            .success()
            .stderr(predicate::str::contains("Content-Encoding").not());
        let back = t.path().join("back");
        s3.subcommand("restore")
            .args(["--from", &s3.url(&prefix)])
            .arg(&back)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(back.join("data/a.log")).unwrap(),
            text(20_000, 3)
        );
        assert_eq!(
            std::fs::read(back.join("data/b.json")).unwrap(),
            text(5_000, 4)
        );
    }
}

/// `curl --compressed` (as a browser asks) of `key`, signed: (body, response headers).
#[cfg(ferry_test_boto3)]
fn curl_compressed(s3: &S3, key: &str) -> (Vec<u8>, String) {
    let headers = tempfile::NamedTempFile::new().unwrap();
    let curl = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--compressed"])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .arg("--dump-header")
        .arg(headers.path())
        .arg("--user")
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        .arg(format!("{}/{}/{key}", s3.endpoint, s3.bucket))
        .output()
        .unwrap();
    assert!(
        curl.status.success(),
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let head = std::fs::read_to_string(headers.path()).unwrap();
    (curl.stdout, head.to_ascii_lowercase())
}

/// `--web` into a store: each file under its own name with the type of its extension.
/// Text goes gzipped with `Content-Encoding: gzip`, so `curl --compressed` (a browser) gets
/// the source's bytes and boto3 the gzip bytes; a PNG goes unchanged, with no encoding;
/// `--cache-control` reaches every object. Verify and restore take both forms, and a
/// rerun skips everything.
#[test]
#[cfg_attr(not(ferry_test_boto3), ignore = "needs boto3 (PyPI) and curl")]
fn web_mode_serves_text_gzipped_and_the_rest_unchanged() {
    #[cfg(ferry_test_boto3)]
    {
        let s3 = s3();
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("site");
        write(&src, "index.html", &text(30_000, 5));
        write(&src, "img/logo.png", &noise(4_000));
        let prefix = unique("web");
        let deliver = |extra: &[&str]| {
            let r = s3
                .ferry()
                .arg(&src)
                .arg("--to")
                .arg(s3.url(&prefix))
                .args(["--web", "--cache-control", "public, max-age=60"])
                .args(extra)
                .args(["--report", "-"])
                .assert()
                .success();
            report(&r.get_output().stdout)
        };
        assert_eq!(deliver(&[])["totals"]["succeeded"], 2);
        let html = format!("{prefix}/site/index.html");
        let png = format!("{prefix}/site/img/logo.png");
        assert_eq!(
            s3.keys(&prefix)
                .into_iter()
                .filter(|k| !k.contains(".ferry-"))
                .count(),
            2,
            "no .gz keys"
        );
        let (encoding, kind, _) = s3.head(&html);
        assert_eq!((encoding.as_str(), kind.as_str()), ("gzip", "text/html"));
        let (encoding, kind, _) = s3.head(&png);
        assert_eq!((encoding.as_str(), kind.as_str()), ("", "image/png"));

        let (body, headers) = curl_compressed(&s3, &html);
        assert_eq!(body, text(30_000, 5), "curl --compressed gets the page");
        assert!(headers.contains("content-type: text/html"), "{headers}");
        assert!(
            headers.contains("cache-control: public, max-age=60"),
            "{headers}"
        );
        let raw = boto3(
            &s3,
            &format!(
                "sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key={html:?})['Body'].read())"
            ),
        );
        let gz = t.path().join("index.html.gz");
        std::fs::write(&gz, &raw).unwrap();
        assert_eq!(gunzip(&gz), text(30_000, 5), "boto3 gets the gzip bytes");
        let (body, headers) = curl_compressed(&s3, &png);
        assert_eq!(body, noise(4_000), "the PNG as it was");
        assert!(!headers.contains("content-encoding"), "{headers}");

        s3.subcommand("verify")
            .args(["--to", &s3.url(&prefix)])
            .assert()
            .success()
            .stderr(predicate::str::contains("2 ok, 0 bad"))
            .stderr(predicate::str::contains("Content-Encoding").not());
        let back = t.path().join("back");
        s3.subcommand("restore")
            .args(["--from", &s3.url(&prefix)])
            .arg(&back)
            .assert()
            .success();
        assert_eq!(
            std::fs::read(back.join("site/index.html")).unwrap(),
            text(30_000, 5)
        );
        assert_eq!(
            std::fs::read(back.join("site/img/logo.png")).unwrap(),
            noise(4_000)
        );
        assert_eq!(deliver(&[])["totals"]["skipped"], 2);
    }
}

/// A body damaged on the way is refused by the store (its checksum, sent with every PUT
/// and part, no longer matches), retried by ferry, and arrives right.
#[test]
fn a_body_damaged_on_the_way_is_refused_by_the_store_and_sent_again() {
    // moto checks neither the payload's signed hash nor its checksum (it stored the
    // damaged body): this test always runs against the in-process server.
    let s3 = in_process();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("d");
    write(&src, "a.log", &text(50_000, 7));
    let (endpoint, damaged) = damaging_proxy(&s3.endpoint);
    let prefix = unique("damage");
    let r = s3
        .ferry()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .arg(&src)
        .args(["--to", &s3.url(&prefix), "--report", "-", "-vv"])
        .assert();
    let out = r.get_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(damaged.load(SeqCst), "the proxy damaged nothing: {err}");
    let v = report(&out.stdout);
    assert_eq!(v["totals"]["succeeded"], 1, "{err}");
    let down = t.path().join("down");
    s3.download(&prefix, &down);
    assert_eq!(gunzip(&down.join("d/a.log.gz")), text(50_000, 7));
    // The store keeps the checksum it checked, for any client to compare.
    #[cfg(ferry_test_boto3)]
    {
        let key = format!("{prefix}/d/a.log.gz");
        let said = boto3(
            &s3,
            &format!(
                "import hashlib, base64\n\
                 h = s3.head_object(Bucket=bucket, Key={key:?}, ChecksumMode='ENABLED')\n\
                 body = s3.get_object(Bucket=bucket, Key={key:?})['Body'].read()\n\
                 sys.stdout.write(repr((h.get('ChecksumSHA256'), base64.b64encode(hashlib.sha256(body).digest()).decode())))"
            ),
        );
        let said = String::from_utf8_lossy(&said);
        let (stored, actual) = said.trim_matches(['(', ')']).split_once(", ").unwrap();
        assert_eq!(stored, actual, "{said}");
    }
}

/// `verify --quick` checks 2,500 objects from one listing (a request per 1,000 keys), and
/// finds one deleted behind ferry's back, without reading an object.
#[test]
fn a_quick_verify_lists_instead_of_reading() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("q");
    for i in 0..2_500u64 {
        write(
            &src,
            &format!("d{}/f{i}", i % 10),
            format!("{i}\n").as_bytes(),
        );
    }
    let prefix = unique("quick");
    assert_eq!(s3.deliver(&src, &prefix)["totals"]["succeeded"], 2_500);
    let quick = |code: i32| {
        let r = s3
            .subcommand("verify")
            .args(["--quick", "--report", "-", "--to", &s3.url(&prefix)])
            .assert()
            .code(code);
        let v: serde_json::Value = serde_json::from_slice(&r.get_output().stdout).unwrap();
        (
            v,
            String::from_utf8_lossy(&r.get_output().stderr).to_string(),
        )
    };
    let (v, err) = quick(0);
    assert_eq!(v["ok"], 2_500, "{err}");
    // Reading the history (listings of its names, manifest, journal; 6 here), then 3
    // pages of 1,000 keys.
    let requests = v["requests"].as_u64().unwrap();
    assert!(
        requests <= 10,
        "{requests} requests for 2,500 objects: {err}"
    );
    assert!(err.contains("requests to the store"), "{err}");
    // Each also against the ETag the store answered when it stored it, where its listing
    // gives ETags: moto and S3 do, the in-process s3s-fs lists none.
    let etags = s3.local.is_none();
    if etags {
        assert_eq!(v["etags"], 2_500, "{err}");
        assert!(err.contains("2500 against the ETag"), "{err}");
    }
    if let Some(local) = s3.local {
        std::fs::remove_file(local.object_path(&s3.bucket, &format!("{prefix}/q/d3/f1003.gz")))
            .unwrap();
    } else {
        s3.aws(&["s3", "rm", &format!("{}/q/d3/f1003.gz", s3.url(&prefix))]);
        // Another object replaced by one of the same size: only its ETag tells.
        let at = format!("s3://{}/{prefix}/q/d5/f1005.gz", s3.bucket);
        let down = t.path().join("f1005.gz");
        s3.aws(&["s3", "cp", &at, &down.display().to_string()]);
        let mut bytes = std::fs::read(&down).unwrap();
        bytes[4] ^= 1; // the gzip header's MTIME: the same size, other bytes
        std::fs::write(&down, &bytes).unwrap();
        s3.aws(&["s3", "cp", &down.display().to_string(), &at]);
    }
    let (v, err) = quick(1);
    assert_eq!(v["mismatches"][0]["key"], "q/d3/f1003.gz", "{err}");
    assert_eq!(v["mismatches"][0]["problem"], "missing", "{err}");
    if etags {
        assert_eq!(v["mismatches"][1]["key"], "q/d5/f1005.gz", "{err}");
        let problem = v["mismatches"][1]["problem"].as_str().unwrap();
        assert!(problem.contains("ETag"), "{err}");
    }
}

/// `--delete` into a store: the object of a file removed at the source goes (a HEAD
/// first: only one still at its recorded size), the others stay.
#[test]
fn delete_removes_the_objects_of_files_gone_at_the_source() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("m");
    write(&src, "a.log", &text(5_000, 1));
    write(&src, "b.log", &text(6_000, 2));
    let prefix = unique("delete");
    assert_eq!(s3.deliver(&src, &prefix)["totals"]["succeeded"], 2);
    std::fs::remove_file(src.join("a.log")).unwrap();
    let r = s3
        .ferry()
        .arg(&src)
        .args(["--to", &s3.url(&prefix), "--delete", "--report", "-"])
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["deleted"], 1);
    let keys = s3.keys(&prefix);
    assert!(!keys.iter().any(|k| k.ends_with("m/a.log.gz")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("m/b.log.gz")), "{keys:?}");
}

/// `ferry watch` into S3: a file renamed after it was shipped has its object copied by
/// the store itself (a server-side copy), not sent again; the new file goes under the
/// old key; both read back as they are.
#[test]
fn a_renamed_file_is_copied_by_the_store_in_a_watch() {
    let s3 = s3();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("w");
    write(&src, "app.log", &text(20_000, 7));
    let prefix = unique("renamed");
    let url = s3.url(&prefix);
    let args = [
        "watch",
        src.to_str().unwrap(),
        "--to",
        &url,
        "--settle",
        "200ms",
        "-v",
    ];
    let mut w = spawn_with_keys(args, &s3.endpoint);
    w.wait_for("watch: watching 1 input");
    std::fs::rename(src.join("app.log"), src.join("app.log.1")).unwrap();
    write(&src, "app.log", b"the next generation\n");
    let line = w.wait_until("app.log.1 renamed", |l| {
        l.starts_with("[renamed]") && l.contains("app.log.1")
    });
    assert!(line.contains("copied in the store"), "{line}");
    w.wait_until("the new app.log shipped", |l| {
        l.starts_with("[done]") && l.contains("/app.log ")
    });
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.starts_with("[done]") && l.contains("app.log.1")),
        "{err}"
    );
    let back = t.path().join("back");
    s3.download(&prefix, &back);
    assert_eq!(gunzip(&back.join("w/app.log.1.gz")), text(20_000, 7));
    assert_eq!(gunzip(&back.join("w/app.log.gz")), b"the next generation\n");
}
