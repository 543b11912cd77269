//! Faults on purpose: interrupts and kills mid-run, a sink that runs out of room,
//! unreadable files, awkward entries, overload. Every test ends with the accounting
//! checked and every output present decoded.

mod common;

use common::*;
use predicates::prelude::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Starts ferry with `args`, waits (on its own stderr lines, not a clock) until `ready`
/// matches a line, sends `signal`, and returns (exit status, all stderr).
fn signal_when(
    args: &[&std::ffi::OsStr],
    ready: &str,
    signal: i32,
) -> (std::process::ExitStatus, String) {
    let mut ferry = Running::spawn(args);
    ferry.wait_for(ready);
    ferry.signal(signal);
    let (status, err, _) = ferry.finish();
    (status, err)
}

#[test]
fn interrupting_during_a_big_files_segments_leaves_nothing_half_made() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    let big = text(8 << 20, 1);
    write(&src, "big.log", &big);
    write(&src, "small.txt", b"small");
    let out = t.path().join("out");
    let args: Vec<&std::ffi::OsStr> = vec![
        src.as_os_str(),
        "--to".as_ref(),
        out.as_os_str(),
        "-vv".as_ref(),
        "-j".as_ref(),
        "1".as_ref(),
        "--queue".as_ref(),
        "1".as_ref(),
        "--segment-size".as_ref(),
        "16KiB".as_ref(),
    ];
    let (status, err) = signal_when(&args, "big.log segment 20/", libc::SIGINT);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        !out.join("s/big.log.gz").exists(),
        "a partial big.log.gz is visible"
    );
    outputs_are_whole(&out);
    // The rerun delivers the rest and skips what was done.
    let v = deliver(&src, &out);
    assert_eq!(v["totals"]["discovered"], 2);
    assert_eq!(gunzip(&out.join("s/big.log.gz")), big);
    assert_eq!(outputs_are_whole(&out), 2);
}

#[test]
fn sigkill_mid_run_then_rerun_delivers_everything_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..400 {
        write(
            &src,
            &format!("d{}/f{i}", i % 9),
            &text(20_000 + i * 13, i as u64),
        );
    }
    let out = t.path().join("out");
    let args: Vec<&std::ffi::OsStr> = vec![
        src.as_os_str(),
        "--to".as_ref(),
        out.as_os_str(),
        "-v".as_ref(),
        "-j".as_ref(),
        "1".as_ref(),
    ];
    let (status, _) = signal_when(&args, "[done]", libc::SIGKILL);
    assert_eq!(status.code(), None, "killed by a signal");
    // Nothing can clean up after SIGKILL, but no partial output is under a final name.
    for rel in files_under(&out) {
        if rel.extension().is_some_and(|e| e == "gz") {
            gunzip(&out.join(rel));
        }
    }
    let v = deliver(&src, &out);
    assert_eq!(v["totals"]["discovered"], 400);
    assert_eq!(outputs_are_whole(&out), 400);
    // The manifest now lists every file: a third run skips them all.
    assert_eq!(deliver(&src, &out)["totals"]["skipped"], 400);
}

#[test]
fn a_sink_that_runs_out_of_room_fails_those_files_and_delivers_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    // Incompressible, so its output is as big as it is.
    let noise = noise(2 << 20);
    write(&src, "huge.bin", &noise);
    for i in 0..10 {
        write(&src, &format!("small{i}.txt"), &text(2000, i));
    }
    let out = t.path().join("out");
    // RLIMIT_FSIZE of 512 KiB, as `ulimit -f` in a user's shell sets it, and nothing
    // else: SIGXFSZ keeps its default action (kill) unless ferry ignores it itself, so
    // that the write returns EFBIG instead.
    let script = format!(
        "ulimit -f 512; exec '{}' '{}' --progress never --report - --to '{}'",
        assert_cmd::cargo::cargo_bin("ferry").display(),
        src.display(),
        out.display()
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("huge.bin: write failed: file too large"),
        "{err}"
    );
    let v = report(&o.stdout);
    assert_eq!(v["totals"]["failed"], 1);
    assert_eq!(v["totals"]["succeeded"], 10);
    assert!(!out.join("s/huge.bin.gz").exists());
    assert_eq!(outputs_are_whole(&out), 10);
}

#[test]
#[cfg_attr(
    not(ferry_test_setpriv),
    ignore = "needs root and setpriv, to run ferry as an unprivileged user"
)]
fn unreadable_files_and_directories_fail_with_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path().join("s");
    write(&src, "ok.txt", b"fine");
    let secret = write(&src, "secret.txt", b"no");
    write(&src, "locked/inside.txt", b"no");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(src.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("ferry"))
        .arg(&src)
        .args(["--progress", "never", "--report", "-", "--to"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("secret.txt: permission denied"), "{err}");
    assert!(err.contains("locked: permission denied"), "{err}");
    let v = report(&o.stdout);
    assert_eq!(v["totals"]["succeeded"], 1);
    assert_eq!(v["totals"]["failed"], 2);
    assert_eq!(gunzip(&out.join("s/ok.txt.gz")), b"fine");
}

#[test]
fn deep_paths_and_a_sparse_2gib_file_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    let deep: String = (0..45).map(|i| format!("level{i}/")).collect();
    write(&src, &format!("{deep}leaf.txt"), b"deep");
    let sparse = src.join("sparse.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    let out = t.path().join("out");
    let r = ferry()
        .arg(&src)
        .args(["-1", "--report", "-", "--to"])
        .arg(&out)
        .timeout(Duration::from_secs(600))
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["succeeded"], 2);
    assert_eq!(gunzip(&out.join(format!("s/{deep}leaf.txt.gz"))), b"deep");
    // Decode the 2 GiB without holding it: count bytes and check they are all zero.
    let gz = std::fs::File::open(out.join("s/sparse.img.gz")).unwrap();
    let mut d = flate2::read::GzDecoder::new(std::io::BufReader::new(gz));
    let (mut n, mut buf) = (0u64, vec![0u8; 1 << 20]);
    loop {
        let k = std::io::Read::read(&mut d, &mut buf).unwrap();
        if k == 0 {
            break;
        }
        assert!(buf[..k].iter().all(|&b| b == 0));
        n += k as u64;
    }
    assert_eq!(n, 2 << 30);
    let rss = max_child_rss_kib();
    // The largest child so far: ferry's peak RSS, bounded by the budget, not the file.
    assert!(rss < 256 * 1024, "peak RSS {rss} KiB for a 2 GiB file");
}

/// Peak RSS of the largest waited-for child process so far, in KiB.
fn max_child_rss_kib() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss
}

#[test]
fn overload_with_capacity_one_queues_and_with_many_workers() {
    // tmpfs when there is one: 100,000 file creations on ext4 would measure the disk.
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let t = tempfile::tempdir_in(base).unwrap();
    let src = t.path().join("s");
    for i in 0..100_000 {
        write(
            &src,
            &format!("d{}/f{i}", i % 100),
            format!("{i}\n").as_bytes(),
        );
    }
    for (k, args) in [
        vec![
            "--queue",
            "1",
            "-j",
            "1",
            "--load-workers",
            "1",
            "--upload-workers",
            "1",
        ],
        vec![
            "--queue",
            "1",
            "-j",
            "8",
            "--load-workers",
            "8",
            "--upload-workers",
            "32",
        ],
    ]
    .iter()
    .enumerate()
    {
        let out = t.path().join(format!("out{k}"));
        let r = ferry()
            .arg(&src)
            .args(args)
            .args(["--report", "-", "--to"])
            .arg(&out)
            .timeout(Duration::from_secs(600))
            .assert()
            .success();
        assert_eq!(
            report(&r.get_output().stdout)["totals"]["succeeded"],
            100_000
        );
        assert_eq!(gunzip(&out.join("s/d57/f99957.gz")), b"99957\n");
    }
    assert!(max_child_rss_kib() < 256 * 1024, "RSS grew with file count");
}

/// An object whose bytes were changed after it was stored, in a way that still decodes
/// to the same file (its gzip header's MTIME rewritten), is found by its recorded CRC-32 of
/// the stored bytes, by verify and by restore.
#[test]
fn an_object_changed_after_it_was_stored_is_found_even_when_it_still_decodes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a.log", &text(5000, 3));
    let out = t.path().join("out");
    let to = format!("dir:{}", out.display());
    ferry().arg(&src).args(["--to", &to]).assert().success();
    let object = out.join("s/a.log.gz");
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[4] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    assert_eq!(
        gunzip(&object),
        text(5000, 3),
        "it still decodes to the file"
    );
    assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["verify", "--to", &to])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "changed or damaged after it was stored",
        ));
    let dest = t.path().join("back");
    assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["restore", "--from", &to])
        .arg(&dest)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "changed or damaged after it was stored",
        ));
    assert!(!dest.join("s/a.log").exists());
}

#[test]
fn verify_checks_every_object_against_the_manifest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..12 {
        write(&src, &format!("f{i}"), &text(3000 + i * 100, i as u64));
    }
    let out = t.path().join("out");
    let to = format!("dir:{}", out.display());
    ferry().arg(&src).args(["--to", &to]).assert().success();
    assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["verify", "--to", &to])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "verified 12 objects: 12 ok, 0 bad",
        ));
    // Flip a byte in one object, delete another.
    let f3 = out.join("s/f3.gz");
    let mut bytes = std::fs::read(&f3).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&f3, bytes).unwrap();
    std::fs::remove_file(out.join("s/f7.gz")).unwrap();
    assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["verify", "--to", &to])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("ferry: s/f3.gz:"))
        .stderr(predicate::str::contains(
            "ferry: s/f7.gz: no such file or directory",
        ))
        .stderr(predicate::str::contains("10 ok, 2 bad"));
    // --quick reads no object: the missing one and a truncated one are found, the flipped
    // byte (same size) is not, and it says so.
    let f5 = out.join("s/f5.gz");
    let bytes = std::fs::read(&f5).unwrap();
    std::fs::write(&f5, &bytes[..bytes.len() - 3]).unwrap();
    let r = assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["verify", "--quick", "--report", "-", "--to", &to])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("ferry: s/f7.gz: missing"))
        .stderr(predicate::str::contains(format!(
            "ferry: s/f5.gz: {} bytes stored, {} recorded",
            bytes.len() - 3,
            bytes.len()
        )))
        .stderr(predicate::str::contains("10 ok, 2 bad"))
        .stderr(predicate::str::contains(
            "quick: checked that each object is there at its recorded size; not read",
        ));
    let v: serde_json::Value = serde_json::from_slice(&r.get_output().stdout).unwrap();
    assert_eq!(v["quick"], true);
    let bad: Vec<_> = v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bad, ["s/f5.gz", "s/f7.gz"]);
    assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["verify", "--to"])
        .arg(t.path().join("empty"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no manifest"));
}

#[test]
fn non_utf8_failure_paths_are_lossless_in_the_report() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"gone-\xff.txt");
    let list = t.path().join("list");
    std::fs::write(&list, [b"d/".as_slice(), name.as_bytes(), b"\n"].concat()).unwrap();
    let r = ferry()
        .current_dir(t.path())
        .args(["--files-from", "list", "--report", "-", "--to", "dir:out"])
        .assert()
        .code(1);
    let v = report(&r.get_output().stdout);
    let bytes: Vec<u8> = v["failures"][0]["path_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(bytes, [b"d/".as_slice(), name.as_bytes()].concat());
    assert_eq!(v["failures"][0]["path"], "d/gone-\u{fffd}.txt");
}

/// Runs ferry on `src` into a slow simulated link (30 ms a request) with a two-segment
/// memory budget and one-item queues, so reading and walking are held back by uploading.
/// When a stderr line contains `ready`, `act` changes the tree under the running ferry.
/// Returns the exit status, all of stderr, and the `--report -` JSON bytes.
fn held_back(
    src: &Path,
    ready: &str,
    act: impl FnOnce(),
) -> (std::process::ExitStatus, String, Vec<u8>) {
    let mut args: Vec<&std::ffi::OsStr> = vec![src.as_os_str()];
    args.extend(
        [
            "--to",
            "sim:latency=30ms",
            "--memory",
            "32KiB",
            "--segment-size",
            "16KiB",
            "--queue",
            "1",
            "--load-workers",
            "1",
            "--retries",
            "0",
            "-vv",
            "--report",
            "-",
        ]
        .map(std::ffi::OsStr::new),
    );
    let mut ferry = Running::spawn(args);
    ferry.wait_for(ready);
    act();
    ferry.finish()
}

/// One 64-segment file; `change` alters it once its second segment has been read.
fn change_while_reading(change: impl FnOnce(&Path)) -> (std::process::ExitStatus, String) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    let f = write(&src, "moving.log", &text(64 * 16 * 1024, 3));
    let (status, err, _) = held_back(&src, "moving.log segment 2/64", || change(&f));
    (status, err)
}

#[test]
fn a_file_truncated_while_being_read_is_failed_not_delivered_torn() {
    let (status, err) = change_while_reading(|f| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(1000)
            .unwrap();
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("moving.log: changed while reading (file shrank)"),
        "{err}"
    );
    assert!(err.contains("1 failed"), "{err}");
}

#[test]
fn a_file_that_grows_while_being_read_is_failed_not_delivered_torn() {
    let (status, err) = change_while_reading(|f| {
        use std::io::Write;
        let mut h = std::fs::OpenOptions::new().append(true).open(f).unwrap();
        h.write_all(b"one more line\n").unwrap();
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("moving.log: changed while reading"), "{err}");
    assert!(err.contains("1 failed"), "{err}");
}

#[test]
fn interrupts_early_and_midway_through_thousands_of_files_then_rerun() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..2000 {
        write(
            &src,
            &format!("d{}/f{i:04}", i % 20),
            &text(3000 + i, i as u64),
        );
    }
    // Early: as soon as the producers start. Midway: once file 1000 is delivered.
    for (k, ready) in ["walk worker 0 started", "/f1000 "].iter().enumerate() {
        let out = t.path().join(format!("out{k}"));
        let args: Vec<&std::ffi::OsStr> = vec![
            src.as_os_str(),
            "--to".as_ref(),
            out.as_os_str(),
            "-vv".as_ref(),
            "-j".as_ref(),
            "1".as_ref(),
        ];
        let (status, err) = signal_when(&args, ready, libc::SIGINT);
        assert_eq!(status.code(), Some(130), "{err}");
        assert!(err.contains("interrupted: "), "the summary says why: {err}");
        let delivered = outputs_are_whole(&out);
        let v = deliver(&src, &out);
        assert_eq!(v["totals"]["discovered"], 2000);
        assert_eq!(v["totals"]["skipped"].as_u64(), Some(delivered as u64));
        assert_eq!(outputs_are_whole(&out), 2000);
    }
}

#[test]
fn a_directory_removed_during_the_walk_is_reported_and_the_rest_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..10 {
        write(&src, &format!("a/f{i}"), &text(16 * 1024, i));
        write(&src, &format!("z/g{i}"), &text(100, i));
    }
    // The budget and the slow link hold the walker back inside a/ while z/ is removed.
    let (status, err, stdout) = held_back(&src, "a/f0 segment 1/1", || {
        std::fs::remove_dir_all(src.join("z")).unwrap()
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("/s/z: no such file or directory"), "{err}");
    let v = report(&stdout);
    assert_eq!(v["totals"]["succeeded"], 10);
    assert_eq!(v["totals"]["failed"], 1);
}

#[test]
fn a_file_deleted_between_walk_and_load_fails_alone() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..10 {
        write(&src, &format!("a/f{i}"), &text(16 * 1024, i));
    }
    // The walker has listed a/ when a/f0 is read; reading is held back, so a/f8 is
    // deleted after it was discovered and before it is opened.
    let (status, err, stdout) = held_back(&src, "a/f0 segment 1/1", || {
        std::fs::remove_file(src.join("a/f8")).unwrap()
    });
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("a/f8: no such file or directory"), "{err}");
    let v = report(&stdout);
    assert_eq!(v["totals"]["discovered"], 10);
    assert_eq!(v["totals"]["succeeded"], 9);
}

#[test]
#[cfg_attr(not(ferry_test_mknod), ignore = "needs root allowed to mknod")]
fn device_nodes_are_never_opened() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "ok", b"ok");
    // A character device like /dev/zero (1, 5): reading it would never end.
    let dev = std::ffi::CString::new(src.join("zero").as_os_str().as_encoded_bytes()).unwrap();
    let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
    let r = ferry()
        .arg(&src)
        .args(["-v", "--report", "-", "--to"])
        .arg(t.path().join("out"))
        .assert()
        .success()
        .stderr(predicate::str::contains("zero: character device"));
    let v = report(&r.get_output().stdout);
    assert_eq!(
        (
            v["totals"]["succeeded"].as_u64(),
            v["totals"]["skipped"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

/// `ferry verify --report - --to OUT` with its private memory (RLIMIT_DATA) capped at
/// 64 MiB: an object read whole would not fit. Returns the exit code and the JSON.
fn verify_in_64_mib(out: &Path) -> (Option<i32>, serde_json::Value) {
    let script = format!(
        "ulimit -d 65536; exec '{}' verify --report - --to '{}'",
        assert_cmd::cargo::cargo_bin("ferry").display(),
        out.display()
    );
    let o = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code(), v)
}

#[test]
fn verify_streams_an_object_bigger_than_the_memory_budget_and_reports_json() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "big.bin", &noise(96 << 20));
    write(&src, "small.txt", b"small");
    let out = t.path().join("out");
    ferry()
        .arg(&src)
        .args(["--memory", "16MiB", "--to"])
        .arg(&out)
        .assert()
        .success();
    let (code, v) = verify_in_64_mib(&out);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (v["checked"].as_u64(), v["ok"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    // A truncated object is named in the JSON, and the exit code says so.
    let gz = out.join("s/big.bin.gz");
    let f = std::fs::OpenOptions::new().write(true).open(&gz).unwrap();
    f.set_len(50 << 20).unwrap();
    let (code, v) = verify_in_64_mib(&out);
    assert_eq!(code, Some(1));
    assert_eq!(v["ok"], 1);
    assert_eq!(v["mismatches"][0]["key"], "s/big.bin.gz");
}
