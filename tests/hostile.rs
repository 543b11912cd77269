//! ferry against a hostile user (issue 21): a DEST rearranged while a restore runs, names
//! that look like ferry's own, and runs that share one sink. Nothing may be written
//! outside DEST, nothing of the user's deleted, and nothing delivered left unrecorded.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn restore_cmd(out: &Path, dest: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"));
    c.arg("restore")
        .arg("--from")
        .arg(format!("dir:{}", out.display()))
        .arg(dest)
        .args(["--progress", "never"]);
    c
}

/// Everything under `dir`, files and links, relative.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// Issue 21 point 1: while a one-worker restore runs, a loop keeps renaming each
/// `DEST/A/dN` away and putting a link to an outside directory in its place. Several
/// rounds; nothing may ever appear outside.
#[test]
fn a_directory_swapped_for_a_link_mid_restore_never_leads_outside() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("A");
    for i in 0..1500 {
        write(
            &src,
            &format!("d{}/f{i}.txt", i % 30),
            format!("file {i}\n").as_bytes(),
        );
    }
    let out = t.path().join("out");
    deliver(&src, &out);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for round in 0..4 {
        let dest = t.path().join(format!("dest{round}"));
        std::fs::create_dir(&dest).unwrap();
        let child = restore_cmd(&out, &dest)
            .args(["-j1", "--download-workers", "1", "--report", "-"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, dest, outside) = (stop.clone(), dest.clone(), outside.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for n in 0..30 {
                        let d = dest.join(format!("A/d{n}"));
                        let is_dir = std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir());
                        if is_dir {
                            k += 1;
                            if std::fs::rename(&d, dest.join(format!("A/moved-{n}-{k}"))).is_ok()
                                && std::os::unix::fs::symlink(&outside, &d).is_ok()
                            {
                                swaps += 1;
                            }
                        } else if std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_symlink()) {
                            // Put a fresh directory back, to be swapped again mid-use.
                            let _ = std::fs::remove_file(&d);
                            let _ = std::fs::create_dir(&d);
                        }
                    }
                }
                swaps
            })
        };
        let output = child.wait_with_output().unwrap();
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 0, "round {round}: the race never ran");
        let r = report(&output.stdout);
        assert_eq!(r["totals"]["discovered"], 1500, "round {round}");
        assert!(
            entries(&outside).is_empty(),
            "round {round}: written outside DEST through a swapped link: {:?}",
            entries(&outside)
        );
    }
}

/// Issue 21 point 2, in the sink: files whose names look like ferry's old temps are the
/// user's; a later run of other inputs into the same sink deletes none of them, and the
/// first run's objects of such names still verify.
#[test]
fn look_alike_temp_names_in_the_sink_survive_later_runs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    write(&src, ".ferry-tmp-999999-0", b"a source named like a temp");
    write(&src, "sub/.ferry-tmp-x", b"another");
    write(&src, "plain.txt", b"plain");
    let out = t.path().join("out");
    deliver(&src, &out);
    // The user's own files in the sink, named like temps of a dead run.
    write(&out, "mine/.ferry-tmp-0-12", b"user data");
    write(&out, ".ferry-tmp-1-1", b"user data");
    let other = t.path().join("other");
    write(&other, "b.txt", b"b");
    deliver(&other, &out);
    deliver(&other, &out);
    for kept in [
        "in/.ferry-tmp-999999-0.gz",
        "in/sub/.ferry-tmp-x.gz",
        "mine/.ferry-tmp-0-12",
        ".ferry-tmp-1-1",
    ] {
        assert!(out.join(kept).exists(), "{kept} was deleted");
    }
    verify_dir(&out).assert().success();
}

/// Issue 21 point 2, in DEST: a file the user already had, named like a restore temp,
/// stays; and the look-alikes one restore brought back survive a second restore.
#[test]
fn look_alike_temp_names_in_dest_survive_two_restores() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    write(
        &src,
        ".ferry-restore-999999-0",
        b"a source named like a restore temp",
    );
    write(&src, "d/.ferry-restore-x", b"another");
    write(&src, "d/.ferry-tmp-1-2", b"and one like a sink temp");
    let out = t.path().join("out");
    deliver(&src, &out);
    let dest = t.path().join("dest");
    write(&dest, "mine/.ferry-restore-notes.txt", b"my notes");
    for _ in 0..2 {
        let o = restore_cmd(&out, &dest).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read(dest.join("mine/.ferry-restore-notes.txt")).unwrap(),
            b"my notes"
        );
        for f in [
            ".ferry-restore-999999-0",
            "d/.ferry-restore-x",
            "d/.ferry-tmp-1-2",
        ] {
            assert_eq!(
                std::fs::read(dest.join("in").join(f)).unwrap(),
                std::fs::read(src.join(f)).unwrap(),
                "{f}"
            );
        }
    }
    // Nothing else appeared: no temp, no record left behind.
    assert_eq!(
        entries(&dest),
        [
            "in",
            "in/.ferry-restore-999999-0",
            "in/d",
            "in/d/.ferry-restore-x",
            "in/d/.ferry-tmp-1-2",
            "mine",
            "mine/.ferry-restore-notes.txt",
        ]
        .map(PathBuf::from)
    );
}

/// Issue 21 point 3: a second run into a history that a live run is writing is refused at
/// once, exit 2, naming the other run; once the first has ended, the second delivers, and
/// the manifest holds every file of both (restore brings back all of them).
#[test]
fn a_second_writer_is_refused_by_name_and_nothing_is_lost() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    for i in 0..300 {
        write(
            t.path(),
            &format!("a/f{i}.txt"),
            format!("a {i}\n").as_bytes(),
        );
        write(
            t.path(),
            &format!("b/f{i}.txt"),
            format!("b {i}\n").as_bytes(),
        );
    }
    let out = t.path().join("out");
    // Run A reads its list from a stdin that stays open: it is mid-run until told.
    let mut a = Running::spawn_in(
        Some(t.path()),
        ["--files-from", "-", "-v", "--to"]
            .map(std::ffi::OsString::from)
            .into_iter()
            .chain([out.clone().into_os_string()]),
    );
    let stdin = a.stdin.as_mut().unwrap();
    let list: String = (0..300).map(|i| format!("a/f{i}.txt\n")).collect();
    stdin.write_all(list.as_bytes()).unwrap();
    stdin.flush().unwrap();
    a.wait_for("[done]");
    let b = ferry()
        .current_dir(t.path())
        .arg("b")
        .arg("--to")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&b.stderr);
    assert_eq!(b.status.code(), Some(3), "{err}");
    assert!(err.contains("another ferry run"), "{err}");
    assert!(err.contains(&format!("pid {}", a.pid())), "{err}");
    drop(a.stdin.take());
    let (status, _, _) = a.finish();
    assert!(status.success());
    // Now B may go, and both runs' files are in the history.
    let r = deliver(&t.path().join("b"), &out);
    assert_eq!(r["totals"]["succeeded"], 300);
    let dest = t.path().join("dest");
    let o = restore_cmd(&out, &dest)
        .args(["--report", "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report(&o.stdout)["totals"]["succeeded"], 600);
}

/// Rewrites the entry of `key` in the manifest at `out` with `edit`; `header` sets the
/// header's entry count when given.
fn edit_manifest(
    out: &Path,
    key: &str,
    edit: impl Fn(&mut serde_json::Value),
    header: Option<u64>,
) {
    let path = out.join(".ferry-manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            lines.push(match header {
                Some(n) => format!("{{\"ferry_manifest\":2,\"entries\":{n}}}"),
                None => line.to_string(),
            });
            continue;
        }
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["key"] == key {
            edit(&mut v);
        }
        lines.push(v.to_string());
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

fn ferry_cmd() -> std::process::Command {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("ferry"))
}

fn verify_out(out: &Path) -> std::process::Output {
    verify_dir(out).output().unwrap()
}

/// Issue 21 point 4: a history that lies about sizes fails the file by name, writes no
/// more than the recorded size, leaves no temp, and sizes no allocation.
#[test]
fn a_lying_history_fails_files_by_name_and_never_fills_the_disk() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    // Zeros after noise: a small object (2 MiB) that inflates to 34 MiB.
    let mut bomb = noise(2 << 20);
    bomb.extend(std::iter::repeat_n(0u8, 32 << 20));
    write(&src, "bomb.bin", &bomb);
    write(&src, "seg.bin", &noise(3 << 20));
    write(&src, "short.bin", &noise(3 << 20));
    write(&src, "ok.txt", b"fine");
    let out = t.path().join("out");
    deliver(&src, &out);
    edit_manifest(
        &out,
        "in/bomb.bin",
        |e| {
            e["size"] = 100.into();
            e.as_object_mut().unwrap().remove("segments");
        },
        None,
    );
    edit_manifest(
        &out,
        "in/seg.bin",
        |e| e["segments"]["len"] = (1u64 << 42).into(),
        None,
    );
    edit_manifest(&out, "in/short.bin", |e| e["size"] = 1000.into(), None);
    let dest = t.path().join("dest");
    let o = restore_cmd(&out, &dest)
        .args(["--report", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let r = report(&o.stdout);
    assert_eq!(r["totals"]["failed"], 3, "{err}");
    assert_eq!(r["totals"]["succeeded"], 1, "{err}");
    assert!(
        err.contains("bomb.bin: ") && err.contains("more than the manifest's 100 bytes"),
        "{err}"
    );
    assert!(
        err.contains("seg.bin: ") && err.contains("segment index is damaged"),
        "{err}"
    );
    assert!(
        err.contains("short.bin: ") && err.contains("segment index is damaged"),
        "{err}"
    );
    assert!(
        !err.contains("(unknown)") && !err.contains("panick"),
        "{err}"
    );
    assert_eq!(entries(&dest), ["in", "in/ok.txt"].map(PathBuf::from));
}

/// Issue 21 point 4: a manifest header announcing 10^15 entries (or 2·10^9) is a hint, not
/// an allocation: delivery, verify and restore go on, and `--force` too.
#[test]
fn a_manifest_header_that_lies_about_its_count_allocates_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    write(&src, "a.txt", b"a");
    let out = t.path().join("out");
    deliver(&src, &out);
    for n in [1_000_000_000_000_000u64, 2_000_000_000] {
        edit_manifest(&out, "", |_| {}, Some(n));
        let o = verify_out(&out);
        assert!(
            o.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let dest = t.path().join(format!("dest{n}"));
        let o = restore_cmd(&out, &dest).output().unwrap();
        assert!(
            o.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(std::fs::read(dest.join("in/a.txt")).unwrap(), b"a");
        let o = ferry_cmd()
            .arg(&src)
            .arg("--to")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        edit_manifest(&out, "", |_| {}, Some(n));
        let o = ferry_cmd()
            .arg(&src)
            .arg("--force")
            .arg("--to")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Issue 21 point 5: an object with a second gzip member (or garbage) after its own fails
/// verify and restore, with and without a manifest, naming what is wrong.
#[test]
fn data_after_the_gzip_member_fails_verify_and_restore() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    write(&src, "a.txt", &text(12_000, 3));
    write(&src, "b.txt", b"untouched");
    let out = t.path().join("out");
    deliver(&src, &out);
    let obj = out.join("in/a.txt.gz");
    let mut extra = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    extra.write_all(b"sneaky").unwrap();
    let extra = extra.finish().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&obj).unwrap();
    f.write_all(&extra).unwrap();
    drop(f);
    let size = std::fs::metadata(&obj).unwrap().len();
    edit_manifest(&out, "in/a.txt", |e| e["bytes_out"] = size.into(), None);
    let o = verify_out(&out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a.txt") && err.contains("after the gzip member"),
        "{err}"
    );
    let o = restore_cmd(&out, &t.path().join("d1")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a.txt") && err.contains("after the gzip member"),
        "{err}"
    );
    // Without a manifest, the member's own end is the check.
    for f in std::fs::read_dir(&out).unwrap() {
        let p = f.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".ferry-")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let d2 = t.path().join("d2");
    let o = restore_cmd(&out, &d2).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a.txt") && err.contains("after the gzip member"),
        "{err}"
    );
    assert_eq!(entries(&d2), ["in", "in/b.txt"].map(PathBuf::from));
}

/// Issue 21 point 6: a file rewritten in place while it is read, its mtime put back (as
/// `rsync --inplace -t` does), is failed, never delivered torn; and a rerun after such a
/// rewrite sends it again instead of skipping it forever.
#[test]
fn a_rewrite_in_place_with_the_mtime_put_back_is_never_delivered_torn() {
    use std::io::{Seek, Write};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    let big = write(&src, "big.bin", &noise(40 << 16));
    let mtime = filetime::FileTime::from_last_modification_time(&big.metadata().unwrap());
    // A slow sink and room for two segments: the read of 40 segments takes seconds.
    let mut ferry = Running::spawn([
        src.as_os_str(),
        "-vv".as_ref(),
        "--segment-size".as_ref(),
        "64KiB".as_ref(),
        "--memory".as_ref(),
        "128KiB".as_ref(),
        "--to".as_ref(),
        "sim:latency=100ms".as_ref(),
    ]);
    ferry.wait_for("segment 2/40");
    let mut f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.seek(std::io::SeekFrom::Start(30 << 16)).unwrap();
    f.write_all(&[0xAB; 4096]).unwrap();
    drop(f);
    filetime::set_file_mtime(&big, mtime).unwrap();
    let (status, err, _) = ferry.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("big.bin") && err.contains("1 failed"), "{err}");

    // A rerun: delivered, then rewritten in place with the mtime put back.
    let small = write(&src, "small.txt", b"version one");
    let out = t.path().join("out");
    std::fs::remove_file(&big).unwrap();
    deliver(&src, &out);
    let m = filetime::FileTime::from_last_modification_time(&small.metadata().unwrap());
    std::fs::write(&small, b"version two").unwrap();
    filetime::set_file_mtime(&small, m).unwrap();
    let r = deliver(&src, &out);
    assert_eq!(r["totals"]["succeeded"], 1, "{r}");
    assert_eq!(gunzip(&out.join("in/small.txt.gz")), b"version two");
}

/// Issue 21 point 7: a file name with terminal escapes is printed escaped in every line a
/// person reads (delivery, verify, restore at `-v`), and exact in JSON.
#[test]
fn names_with_control_characters_are_printed_escaped() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    write(&src, "a\x1b[31mRED\x1b[0m\nline", b"red");
    let out = t.path().join("out");
    let o = ferry_cmd()
        .arg(&src)
        .args(["-v", "--progress", "never", "--report", "-", "--to"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(err.contains("a\\e[31mRED\\e[0m\\nline"), "{err}");
    // The history keeps the name exact.
    let manifest = std::fs::read_to_string(out.join(".ferry-manifest.json")).unwrap();
    assert!(
        manifest.contains("\\u001b[31mRED\\u001b[0m\\nline"),
        "{manifest}"
    );
    let dest = t.path().join("dest");
    let o = restore_cmd(&out, &dest).arg("-v").output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains('\x1b') && err.contains("\\e[31mRED"),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(dest.join("in/a\x1b[31mRED\x1b[0m\nline")).unwrap(),
        b"red"
    );
    // A damaged object named so: verify's error line is escaped too.
    std::fs::write(out.join("in/a\x1b[31mRED\x1b[0m\nline.gz"), b"junk").unwrap();
    let o = verify_out(&out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !err.contains('\x1b') && err.contains("\\e[31mRED"),
        "{err:?}"
    );
}

/// Issue 21 point 7: `a`, `./a` and `a//` in a list are one key, taken once; a bare `.`
/// is a directory, not a path that climbs.
#[test]
fn a_listed_file_is_taken_once_whatever_its_spelling() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "a", b"a");
    std::fs::write(t.path().join("list"), "a\n./a\na//\n.\n").unwrap();
    let o = ferry_cmd()
        .current_dir(t.path())
        .args([
            "--files-from",
            "list",
            "--progress",
            "never",
            "--report",
            "-",
            "--to",
            "dir:out",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let r = report(&o.stdout);
    assert_eq!(r["totals"]["succeeded"], 1, "{err}");
    assert_eq!(r["totals"]["discovered"], 2, "{err}");
    assert!(err.contains("listed more than once"), "{err}");
    assert!(!err.contains(".."), "{err}");
}

/// Issue 21 point 7: a bucket name that is not a name is refused before any request, and
/// a password in an endpoint URL is never printed.
#[test]
fn bad_bucket_names_are_refused_and_endpoint_passwords_never_printed() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "in/a", b"a");
    for to in [
        "s3://bucket?acl",
        "s3://bucket?acl/p",
        "az://UPPER/p",
        "gs://x/a/../b",
    ] {
        let o = ferry_cmd()
            .arg(t.path().join("in"))
            .args(["--progress", "never", "--force", "--to", to])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{to}: {err}");
        assert!(
            err.contains("not valid") || err.contains("segment"),
            "{to}: {err}"
        );
    }
    // Nothing listens on port 9: the setup error names the endpoint, not its password.
    let o = ferry_cmd()
        .arg(t.path().join("in"))
        .args([
            "--progress",
            "never",
            "--to",
            "s3://bkt/p",
            "--endpoint-url",
            "http://user:hunter2@127.0.0.1:9",
        ])
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Issue 21 point 8: a private source (0600 in a 0700 directory) is delivered into a
/// `dir:` sink no more open than it was: the object and the directories made for it shut
/// to group and others.
#[test]
fn private_sources_stay_private_in_a_local_sink() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("in");
    let secret = write(&src, "private/deep/key.pem", b"secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for d in ["private", "private/deep"] {
        std::fs::set_permissions(src.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let open = write(&src, "public/readme", b"hello");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = t.path().join("out");
    deliver(&src, &out);
    let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode("in/private/deep/key.pem.gz") & 0o077,
        0,
        "{:o}",
        mode("in/private/deep/key.pem.gz")
    );
    assert_eq!(mode("in/private") & 0o077, 0, "{:o}", mode("in/private"));
    assert_eq!(
        mode("in/private/deep") & 0o077,
        0,
        "{:o}",
        mode("in/private/deep")
    );
    // What was open stays as open as the umask lets it.
    assert_eq!(mode("in/public/readme.gz") & 0o600, 0o600);
    assert_eq!(gunzip(&out.join("in/private/deep/key.pem.gz")), b"secret");
}

/// Issue 21 point 9: a DEST that cannot be written is one setup error (exit 2) before
/// any file, as a read-only `dir:` sink is.
#[test]
#[cfg_attr(
    not(ferry_test_setpriv),
    ignore = "needs root and setpriv, to run ferry as an unprivileged user"
)]
fn a_read_only_dest_is_one_setup_error() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path().join("in");
    for i in 0..5 {
        write(&src, &format!("f{i}"), b"x");
    }
    let out = t.path().join("out");
    deliver(&src, &out);
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o555)).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("ferry"))
        .args(["restore", "--progress", "never", "--from"])
        .arg(format!("dir:{}", out.display()))
        .arg(&dest)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

/// Issue 21 point 9: a worker count no machine can run is a usage error at once, naming
/// the flag, not minutes of thread creation.
#[test]
fn absurd_worker_counts_are_usage_errors() {
    for flag in ["--upload-workers", "--load-workers", "-j"] {
        let o = ferry_cmd()
            .args([flag, "100000", ".", "--to", "sim:"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains("at most 1024"), "{flag}: {err}");
    }
    let o = ferry_cmd()
        .args([
            "restore",
            "--download-workers",
            "100000",
            "--from",
            "dir:x",
            "y",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// `dir:` keeps the handles of the directories it wrote into last, for the files that
/// follow. An output directory removed mid-run is made again for the next file, and one
/// swapped for a link to a directory outside never receives a file: the kept handle is
/// dropped when its directory is gone, and the link is refused by the resolution beneath
/// the root.
#[test]
fn an_output_directory_removed_or_swapped_for_a_link_mid_run_never_leads_outside() {
    use std::io::Write;
    for swap in [false, true] {
        let t = tempfile::tempdir().unwrap();
        for i in 0..5 {
            write(t.path(), &format!("d/f{i}"), &text(500, i));
        }
        let (out, outside) = (t.path().join("out"), t.path().join("outside"));
        std::fs::create_dir(&outside).unwrap();
        let mut run = Running::spawn_in(
            Some(t.path()),
            [
                "--files-from",
                "-",
                "-v",
                "--report",
                "-",
                "--to",
                out.to_str().unwrap(),
            ],
        );
        let stdin = run.stdin.as_mut().unwrap();
        stdin.write_all(b"d/f0\n").unwrap();
        stdin.flush().unwrap();
        // The first file is delivered, so its directory's handle is kept.
        run.wait_for("[done]");
        std::fs::remove_dir_all(out.join("d")).unwrap();
        if swap {
            std::os::unix::fs::symlink(&outside, out.join("d")).unwrap();
        }
        let mut stdin = run.stdin.take().unwrap();
        stdin.write_all(b"d/f1\nd/f2\nd/f3\nd/f4\n").unwrap();
        drop(stdin);
        let (status, err, stdout) = run.finish();
        let v = report(&stdout);
        assert!(files_under(&outside).is_empty(), "swap {swap}: {err}");
        if swap {
            assert_eq!(status.code(), Some(1), "{err}");
            assert_eq!(v["totals"]["succeeded"], 1, "{err}");
            assert_eq!(v["totals"]["failed"], 4, "{err}");
        } else {
            assert_eq!(status.code(), Some(0), "{err}");
            assert_eq!(v["totals"]["succeeded"], 5, "{err}");
            for i in 1..5 {
                let gz = out.join(format!("d/f{i}.gz"));
                assert_eq!(gunzip(&gz), text(500, i));
            }
        }
    }
}

/// A crafted history: a symbolic link `s/a -> OUTSIDE` (an absolute path out of DEST),
/// then a file `s/a/passwd` under it. Whichever comes first, nothing is written outside
/// DEST: the link is made as text and never followed, and the file's directory is opened
/// beneath DEST without following links, so it fails by name (or the link does, when the
/// file's directory was made first).
#[test]
fn a_link_in_a_history_never_leads_a_later_file_outside() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a/passwd", b"root::0:0::/:/bin/sh\n");
    write(&src, "b", b"just a file\n");
    let out = t.path().join("out");
    deliver(&src, &out);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // Make s/b's entry say it is the link s/a -> OUTSIDE.
    let target = outside.display().to_string();
    edit_manifest(
        &out,
        "s/b",
        |v| {
            v["key"] = "s/a".into();
            v["link"] = target.clone().into();
            v["bytes_out"] = 0.into();
            v["size"] = target.len().into();
        },
        None,
    );
    let manifest = out.join(".ferry-manifest.json");
    // The directory s/a's own entry would shadow the crafted link of the same key: this
    // history has only the link and the file.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || !l.contains("\"dir\":true"))
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&manifest, kept.join("\n") + "\n").unwrap();
    edit_manifest(&out, "", |_| {}, Some(kept.len() as u64 - 1));
    for round in 0..6 {
        // Half the rounds with the entries in the other order: the link first.
        if round == 3 {
            let text = std::fs::read_to_string(&manifest).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            lines[1..].reverse();
            std::fs::write(&manifest, lines.join("\n") + "\n").unwrap();
        }
        let dest = t.path().join(format!("dest{round}"));
        let mut c = restore_cmd(&out, &dest);
        if round % 2 == 1 {
            c.args(["--download-workers", "1", "-j1"]);
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(entries(&outside).is_empty(), "round {round}: {err}");
        assert!(err.contains("1 failed"), "{err}");
    }
}
