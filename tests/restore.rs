//! `ferry restore`: what goes out with `ferry` comes back byte for byte, mtimes included,
//! never outside DEST, never half-written.

mod common;

use common::*;
use predicates::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `ferry restore --from dir:OUT DEST` with bars off.
fn restore(out: &Path, dest: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("ferry").unwrap();
    c.arg("restore")
        .arg("--from")
        .arg(format!("dir:{}", out.display()))
        .arg(dest)
        .args(["--progress", "never"])
        .timeout(Duration::from_secs(300));
    c
}

/// [`deliver_to`] with the report: its JSON and the summary on stderr.
fn deliver_reporting(src: &Path, out: &Path) -> (serde_json::Value, String) {
    let r = ferry()
        .arg(src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .args(["--report", "-"])
        .assert()
        .success();
    let o = r.get_output();
    (
        report(&o.stdout),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn deliver_to(src: &Path, out: &Path, extra: &[&str]) {
    deliver_dir(src, out, extra).success();
}

/// Every regular file under `a` is under `b` with the same bytes and mtime (to the ns).
fn same_tree(a: &Path, b: &Path) {
    let files = files_under(a);
    assert_eq!(files, files_under(b), "the same names");
    for rel in files {
        let (x, y) = (a.join(&rel), b.join(&rel));
        assert_eq!(
            std::fs::read(&x).unwrap(),
            std::fs::read(&y).unwrap(),
            "{rel:?}"
        );
        let (mx, my) = (x.metadata().unwrap(), y.metadata().unwrap());
        assert_eq!(
            (mx.mtime(), mx.mtime_nsec()),
            (my.mtime(), my.mtime_nsec()),
            "mtime of {rel:?}"
        );
    }
}

/// An awkward tree: empty files, sizes at the segment edges, non-UTF-8 names, deep paths,
/// mtimes with nanoseconds and before 1970.
fn awkward_tree(root: &Path, seg: usize) -> PathBuf {
    let src = root.join("tree");
    write(&src, "empty", b"");
    for (i, n) in [1, seg - 1, seg, seg + 1, 3 * seg, 3 * seg + 7]
        .into_iter()
        .enumerate()
    {
        write(&src, &format!("edges/{i}-{n}.bin"), &text(n, i as u64));
    }
    write(&src, "edges/noise.bin", &noise(5 * seg + 3));
    let deep: String = (0..30).map(|i| format!("d{i}/")).collect();
    write(&src, &format!("{deep}leaf"), b"deep");
    let odd = src.join(OsString::from_vec(b"caf\xe9 \xff.txt".to_vec()));
    std::fs::write(&odd, b"latin-1 name").unwrap();
    let sparse = src.join("zeros.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.set_len(4 * seg as u64 + 5).unwrap();
    drop(f);
    for (i, p) in files_under(&src).into_iter().enumerate() {
        let t =
            filetime::FileTime::from_unix_time(1_600_000_000 + i as i64, 123_456_789 + i as u32);
        filetime::set_file_mtime(src.join(p), t).unwrap();
    }
    filetime::set_file_mtime(
        src.join("empty"),
        filetime::FileTime::from_unix_time(-86_400, 5),
    )
    .unwrap();
    src
}

#[test]
fn an_awkward_tree_round_trips_byte_for_byte_with_mtimes() {
    let t = tempfile::tempdir().unwrap();
    let seg = 64 << 10;
    let src = awkward_tree(t.path(), seg);
    let out = t.path().join("out");
    deliver_to(&src, &out, &["--segment-size", "64KiB"]);
    let dest = t.path().join("back");
    let r = restore(&out, &dest)
        .args(["--report", "-"])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    let n = files_under(&src).len() as u64;
    assert_eq!(v["totals"]["succeeded"], n);
    same_tree(&src, &dest.join("tree"));
    // Nothing else: no temp files.
    assert_eq!(files_under(&dest).len() as u64, n);

    // A rerun finds everything restored; --force restores it again.
    restore(&out, &dest)
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("{n} skipped")));
    restore(&out, &dest)
        .arg("--force")
        .assert()
        .success()
        .stderr(predicate::str::contains(format!("{n} succeeded")));
    same_tree(&src, &dest.join("tree"));
}

#[test]
fn a_file_in_the_way_is_kept_unless_forced_and_a_bad_object_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a.txt", &text(5_000, 1));
    write(&src, "b.txt", &text(5_000, 2));
    write(&src, "big.bin", &noise(3 << 20));
    let out = t.path().join("out");
    deliver_to(&src, &out, &[]);
    let dest = t.path().join("back");
    write(&dest, "s/a.txt", b"my own edits");
    // Corrupt one byte in the middle of each of two objects (one streamed, one segmented).
    for obj in ["s/b.txt.gz", "s/big.bin.gz"] {
        let p = out.join(obj);
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&p, bytes).unwrap();
    }
    let r = restore(&out, &dest)
        .args(["--report", "-"])
        .assert()
        .code(1);
    let o = r.get_output();
    let v = report(&o.stdout);
    assert_eq!(v["totals"]["failed"], 3, "{v}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exists and differs"), "{err}");
    assert!(err.contains("--force overwrites"), "{err}");
    assert_eq!(
        std::fs::read(dest.join("s/a.txt")).unwrap(),
        b"my own edits"
    );
    assert!(!dest.join("s/b.txt").exists());
    assert!(!dest.join("s/big.bin").exists());
    assert_eq!(
        files_under(&dest),
        vec![PathBuf::from("s/a.txt")],
        "no temp file left"
    );

    restore(&out, &dest).arg("--force").assert().code(1);
    assert_eq!(std::fs::read(dest.join("s/a.txt")).unwrap(), text(5_000, 1));
}

/// A hand-made journal naming keys that climb out of DEST, an absolute one, and one under
/// a directory that is a symbolic link out of DEST: each fails by name, nothing is written
/// outside DEST, and the honest entry is restored.
#[test]
fn keys_that_would_leave_dest_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "ok.txt", b"fine");
    let out = t.path().join("sink");
    deliver_to(&src, &out, &[]);
    let gz = std::fs::read(out.join("s/ok.txt.gz")).unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
    // Objects where each evil key would find one.
    let mut journal = String::new();
    for key in [
        "../escape.txt",
        "/tmp/ferry-restore-absolute.txt",
        "a/../../escape2.txt",
        "link/planted.txt",
    ] {
        let obj = out.join(format!("{}.gz", key.trim_start_matches('/')));
        std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
        std::fs::write(&obj, &gz).unwrap();
        journal.push_str(&format!(
            "{{\"key\":{key:?},\"size\":4,\"mtime_s\":0,\"mtime_ns\":0,\"crc32\":{},\"bytes_out\":{}}}\n",
            crc(b"fine"),
            gz.len()
        ));
    }
    std::fs::write(out.join(".ferry-journal.0000000099.jsonl"), journal).unwrap();
    let r = restore(&out, &dest)
        .args(["--report", "-"])
        .assert()
        .code(1);
    let o = r.get_output();
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "unsafe key \"../escape.txt\"",
        "unsafe key \"/tmp/ferry-restore-absolute.txt\"",
        "unsafe key \"a/../../escape2.txt\"",
        "link is a symbolic link; restore never writes through one",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    let v = report(&o.stdout);
    assert_eq!(
        (
            v["totals"]["succeeded"].as_u64(),
            v["totals"]["failed"].as_u64()
        ),
        (Some(1), Some(4))
    );
    assert_eq!(std::fs::read(dest.join("s/ok.txt")).unwrap(), b"fine");
    assert!(files_under(&outside).is_empty());
    assert!(!t.path().join("escape.txt").exists() && !t.path().join("escape2.txt").exists());
    assert!(!Path::new("/tmp/ferry-restore-absolute.txt").exists());
}

/// Into an empty DEST nothing is looked up before it is written; two keys that name the
/// same file (`s/ok.txt`, `s//ok.txt`) meet at the rename, which refuses to replace: one
/// is restored, the other found already there, and the totals still add up.
#[test]
fn two_keys_for_one_file_meet_at_a_rename_that_never_replaces() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "ok.txt", b"fine");
    let out = t.path().join("sink");
    deliver_to(&src, &out, &[]);
    let gz = std::fs::read(out.join("s/ok.txt.gz")).unwrap();
    let m = std::fs::metadata(src.join("ok.txt")).unwrap();
    std::fs::write(
        out.join(".ferry-journal.0000000099.jsonl"),
        format!(
            "{{\"key\":\"s//ok.txt\",\"size\":4,\"mtime_s\":{},\"mtime_ns\":{},\"crc32\":{},\"bytes_out\":{}}}\n",
            m.mtime(),
            m.mtime_nsec(),
            crc(b"fine"),
            gz.len()
        ),
    )
    .unwrap();
    let dest = t.path().join("dest");
    let r = restore(&out, &dest)
        .args(["--report", "-", "-j", "2", "--download-workers", "2"])
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(
        (
            v["totals"]["discovered"].as_u64(),
            v["totals"]["succeeded"].as_u64(),
            v["totals"]["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(std::fs::read(dest.join("s/ok.txt")).unwrap(), b"fine");
    assert_eq!(files_under(&dest), vec![PathBuf::from("s/ok.txt")]);
}

fn crc(b: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(b);
    c.sum()
}

#[test]
fn filters_shards_and_a_dry_run_that_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..12 {
        write(&src, &format!("logs/f{i}.log"), &text(500 + i, i as u64));
        write(&src, &format!("tmp/f{i}.tmp"), b"t");
    }
    let out = t.path().join("out");
    deliver_to(&src, &out, &[]);
    let dest = t.path().join("dry");
    restore(&out, &dest)
        .args(["-n", "--exclude", "tmp/"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would restore:").count(12))
        .stderr(predicate::str::contains("ferry: dry run: 12 files"));
    assert!(!dest.exists(), "a dry run creates nothing");

    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for (d, k) in [(&a, "0/2"), (&b, "1/2")] {
        restore(&out, d)
            .args(["--include", "*.log", "--shard", k])
            .assert()
            .success();
    }
    let (fa, fb) = (files_under(&a), files_under(&b));
    assert_eq!(fa.len() + fb.len(), 12);
    assert!(fa
        .iter()
        .chain(&fb)
        .all(|p| p.extension().unwrap() == "log"));
    assert!(fa.iter().all(|p| !fb.contains(p)));
}

/// Without a manifest (objects copied elsewhere, or delivered by another tool), restore
/// lists the `.gz` objects, checks each against its own gzip trailer, and takes the mtime
/// from the gzip header (whole seconds).
#[test]
fn without_a_manifest_the_listing_and_each_members_trailer_serve() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a/b.txt", &text(40_000, 3));
    write(&src, "big.bin", &noise(2 << 20));
    filetime::set_file_mtime(
        src.join("a/b.txt"),
        filetime::FileTime::from_unix_time(1_500_000_000, 0),
    )
    .unwrap();
    let out = t.path().join("out");
    deliver_to(&src, &out, &[]);
    for f in files_under(&out) {
        if f.to_string_lossy().starts_with(".ferry-") {
            std::fs::remove_file(out.join(f)).unwrap();
        }
    }
    let dest = t.path().join("back");
    restore(&out, &dest)
        .assert()
        .success()
        .stderr(predicate::str::contains("2 succeeded"));
    assert_eq!(
        std::fs::read(dest.join("s/a/b.txt")).unwrap(),
        text(40_000, 3)
    );
    assert_eq!(
        std::fs::read(dest.join("s/big.bin")).unwrap(),
        noise(2 << 20)
    );
    assert_eq!(
        dest.join("s/a/b.txt").metadata().unwrap().mtime(),
        1_500_000_000
    );
}

/// A 5 GiB sparse source goes out and comes back within the memory budget: objects are
/// streamed, segments inflated a budget's worth at a time, and a hole stays a hole.
#[test]
fn a_sparse_5gib_file_restores_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("disk.img")).unwrap();
    f.set_len(5 << 30).unwrap();
    drop(f);
    let out = t.path().join("out");
    ferry()
        .arg(&src)
        .args(["-1", "--to"])
        .arg(&out)
        .timeout(Duration::from_secs(900))
        .assert()
        .success();
    let dest = t.path().join("back");
    restore(&out, &dest)
        .timeout(Duration::from_secs(900))
        .assert()
        .success()
        .stderr(predicate::str::contains("1 succeeded"));
    let back = dest.join("s/disk.img").metadata().unwrap();
    assert_eq!(back.len(), 5 << 30);
    // Restored with the CRC-32 of 5 GiB of zeros checked, and sparse where the engine
    // keeps segments apart (libdeflate): far fewer blocks than bytes.
    if cfg!(feature = "libdeflate") {
        assert!(back.blocks() * 512 < 1 << 30, "{} blocks", back.blocks());
    }
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    assert!(u.ru_maxrss < 256 * 1024, "peak RSS {} KiB", u.ru_maxrss);
}

#[test]
fn a_sink_with_nothing_to_restore_is_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("back");
    restore(&t.path().join("no-such-archive"), &dest)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "nothing to restore (no manifest and no .gz objects)",
        ));
    assert!(files_under(&dest).is_empty());
}

/// restore names its own stages in failures (issue 22): a file in the way fails in
/// `fetch` (where restore decides), a corrupt object in `inflate`, a write past the
/// file-size limit in `write` — never delivery's `load`, `compress` or `upload`, and not
/// `inflate` for a write that failed while inflating.
#[test]
fn restore_failures_name_fetch_inflate_and_write() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "in-the-way.txt", b"mine");
    write(&src, "corrupt.log", &text(20_000, 1));
    // One segment, so it is restored whole (written in one write, not pre-sized).
    write(&src, "too-big.txt", &text(900 << 10, 2));
    write(&src, "fine.txt", b"fine");
    let out = t.path().join("out");
    deliver_to(&src, &out, &[]);
    let gz = out.join("s/corrupt.log.gz");
    let mut bytes = std::fs::read(&gz).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&gz, bytes).unwrap();
    let dest = t.path().join("dest");
    write(&dest, "s/in-the-way.txt", b"someone else's");
    // RLIMIT_FSIZE of 512 KiB, as `ulimit -f` in a user's shell sets it.
    let script = format!(
        "ulimit -f 512; exec '{}' restore --progress never --report - --from 'dir:{}' '{}'",
        assert_cmd::cargo::cargo_bin("ferry").display(),
        out.display(),
        dest.display()
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = report(&o.stdout);
    let stage_of = |name: &str| {
        v["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} did not fail: {v}"))["stage"]
            .clone()
    };
    assert_eq!(stage_of("in-the-way.txt"), "fetch", "{v}");
    assert_eq!(stage_of("corrupt.log"), "inflate", "{v}");
    assert_eq!(stage_of("too-big.txt"), "write", "{v}");
    assert_eq!(v["totals"]["succeeded"], 1, "{v}");
    assert_eq!(std::fs::read(dest.join("s/fine.txt")).unwrap(), b"fine");
}

/// `what` under `src` copied into `to` (made) by `tar --format=posix --create | tar
/// --extract --same-permissions` (pax keeps nanoseconds): what ferry restore is held to.
fn tar_copy(src: &Path, what: &str, to: &Path) -> PathBuf {
    std::fs::create_dir(to).unwrap();
    let tar = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --format=posix -C {} -cf - {what} | tar -C {} --same-permissions -xf -",
            src.display(),
            to.display()
        ))
        .status()
        .unwrap();
    assert!(tar.success());
    to.to_path_buf()
}

/// A file's relative path, mode, uid, gid, size and mtime.
type Stat = (PathBuf, u32, u32, u32, u64, (i64, i64));

/// The [`Stat`] of every regular file under `root`.
fn stats(root: &Path) -> Vec<Stat> {
    files_under(root)
        .into_iter()
        .map(|rel| {
            let m = std::fs::symlink_metadata(root.join(&rel)).unwrap();
            let mode = m.mode() & 0o7777;
            (
                rel,
                mode,
                m.uid(),
                m.gid(),
                m.size(),
                (m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

/// Files come back with the permission bits they were delivered with (and, as root,
/// their owner and group, setuid included), the same `stat` as `tar --create | tar
/// --extract --same-permissions` gives; `--no-perms` takes the umask's bits instead,
/// `--no-same-owner` leaves them root's, and a manifest without modes (an older
/// version's) restores as before. Owners and setuid need root: without it the test is
/// reported ignored, not passed with half of it.
#[test]
#[cfg_attr(not(ferry_test_root), ignore = "needs root (owners, setuid)")]
fn modes_and_owners_come_back_as_tar_gives_them() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let modes = [
        ("private", 0o600),
        ("plain", 0o644),
        ("tool", 0o755),
        ("group", 0o750),
        ("setuid", 0o4755),
    ];
    for (i, (name, mode)) in modes.iter().enumerate() {
        let p = src.join("d").join(name);
        write(&src, &format!("d/{name}"), &text(2_000 + i * 100, i as u64));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let p = src.join("d/someone");
    write(&src, "d/someone", b"owned by someone else\n");
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = t.path().join("out");
    deliver_to(&src, &out, &[]);

    let back = t.path().join("back");
    restore(&out, &back).assert().success();
    let by_tar = tar_copy(&src, "d", &t.path().join("tar"));
    let ours = stats(&back.join("src"));
    assert_eq!(ours, stats(&by_tar), "ferry restore against tar");
    let mode_of = |rel: &str| ours.iter().find(|s| s.0 == Path::new(rel)).unwrap().1;
    assert_eq!(mode_of("d/tool"), 0o755);
    assert_eq!(mode_of("d/private"), 0o600);
    assert_eq!(mode_of("d/setuid"), 0o4755);
    let s = ours.iter().find(|s| s.0 == Path::new("d/someone")).unwrap();
    assert_eq!((s.2, s.3), (1234, 5678));

    // --no-same-owner: root keeps them, and setuid is not given to root's file.
    let mine = t.path().join("mine");
    restore(&out, &mine)
        .arg("--no-same-owner")
        .assert()
        .success();
    for s in stats(&mine.join("src")) {
        assert_eq!((s.2, s.3), (0, 0), "{:?}", s.0);
        assert_eq!(s.1 & 0o6000, 0, "{:?}", s.0);
    }

    // --no-perms: the umask's bits, so no file comes back executable.
    let plain = t.path().join("plain");
    restore(&out, &plain).arg("--no-perms").assert().success();
    for s in stats(&plain.join("src")) {
        assert_eq!(s.1 & 0o7111, 0, "{:?}: {:o}", s.0, s.1);
    }

    // An older version's manifest, without modes or owners: restored as it always was.
    let manifest = out.join(".ferry-manifest.json");
    let text_of = std::fs::read_to_string(&manifest).unwrap();
    let old: Vec<String> = text_of
        .lines()
        .map(|l| {
            if l.contains("\"ferry_manifest\"") {
                return l.to_string(); // the header, as it was
            }
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            assert!(o.remove("mode").is_some() && o.remove("owner").is_some());
            v.to_string()
        })
        .collect();
    std::fs::write(&manifest, old.join("\n") + "\n").unwrap();
    let older = t.path().join("older");
    restore(&out, &older).assert().success();
    for s in stats(&older.join("src")) {
        assert_eq!(s.1 & 0o7111, 0, "{:?}: {:o}", s.0, s.1);
    }
    same_tree(&src, &older.join("src"));
}

/// A restore sets a file's bits and owner only where they are not already what the file
/// was born with, and that must never leave one wrong: under the user's umask 077 every
/// file still comes back with its recorded bits, and into a setgid DEST of another group a
/// file still comes back with its recorded group, not the directory's.
#[test]
#[cfg_attr(not(ferry_test_root), ignore = "needs root (owners)")]
fn recorded_bits_and_owners_win_over_the_umask_and_a_setgid_dest() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    for (i, (name, mode)) in [("plain", 0o644), ("tool", 0o755), ("private", 0o600)]
        .iter()
        .enumerate()
    {
        write(&src, &format!("d/{name}"), &text(1_000 + i, i as u64));
        let p = src.join("d").join(name);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let out = t.path().join("out");
    deliver_to(&src, &out, &[]);
    let want = stats(&src);

    // The user's shell has `umask 077`.
    let back = t.path().join("back");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"umask 077 && exec "$0" restore --from "dir:$1" "$2" --progress never"#)
        .arg(assert_cmd::cargo::cargo_bin("ferry"))
        .arg(&out)
        .arg(&back)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(stats(&back.join("src")), want, "under umask 077");

    // DEST is setgid, of group 5678: new files would take that group.
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, None, Some(5678)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2775)).unwrap();
    restore(&out, &shared).assert().success();
    let got = stats(&shared.join("src"));
    assert_eq!(got, want, "into a setgid DEST");
}

/// Symbolic links are recorded as text (no object), not followed, and come back as they
/// were: to a file, to a directory, absolute, climbing out of the tree, and dangling, with
/// their own mtime, the same as tar gives; a rerun skips them, verify passes them.
#[test]
fn symbolic_links_come_back_as_text() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src, "d/f", b"a file\n");
    let links = [
        ("d/to-file", "f"),
        ("to-dir", "d"),
        ("absolute", "/etc/hostname"),
        ("d/climbs-out", "../../elsewhere"),
        ("dangling", "nowhere"),
    ];
    for (name, to) in links {
        std::os::unix::fs::symlink(to, src.join(name)).unwrap();
    }
    let out = t.path().join("out");
    let (v, _) = deliver_reporting(&src, &out);
    assert_eq!(v["totals"]["succeeded"], 6);
    assert_eq!(v["totals"]["links"], 5, "links are counted apart");
    // One object: the file. Links are entries of the history only.
    assert_eq!(files_under(&out.join("src")), [PathBuf::from("d/f.gz")]);
    ferry()
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .assert()
        .success()
        .stderr(predicate::str::contains("6 skipped"));

    let back = t.path().join("back");
    restore(&out, &back)
        .arg("-n")
        .assert()
        .success()
        .stdout(predicate::str::contains("to-dir (symbolic link)"))
        .stderr(predicate::str::contains(
            "6 files (7 B) would be sent (5 of them symbolic links, recorded as links)",
        ));
    restore(&out, &back)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "6 succeeded (5 of them symbolic links)",
        ));
    let by_tar = tar_copy(&src, ".", &t.path().join("tar"));
    for (name, to) in links {
        let ours = back.join("src").join(name);
        let theirs = by_tar.join(name);
        assert_eq!(std::fs::read_link(&ours).unwrap(), Path::new(to), "{name}");
        let (a, b) = (
            std::fs::symlink_metadata(&ours).unwrap(),
            std::fs::symlink_metadata(&theirs).unwrap(),
        );
        assert!(a.file_type().is_symlink(), "{name}");
        assert_eq!(
            (a.mtime(), a.mtime_nsec(), a.uid(), a.gid()),
            (b.mtime(), b.mtime_nsec(), b.uid(), b.gid()),
            "{name} against tar"
        );
    }
    let diff = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(back.join("src"))
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    // A rerun of the restore finds them there; verify has no object to read for them.
    restore(&out, &back)
        .assert()
        .success()
        .stderr(predicate::str::contains("6 skipped"));
    verify_dir(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "5 of them symbolic links, recorded as text: no object to read",
        ));
}

/// A directory's relative path, mode, uid, gid and mtime.
type DirStat = (PathBuf, u32, u32, u32, (i64, i64));

/// The [`DirStat`] of every directory under `root`, `root` itself as "".
fn dir_stats(root: &Path) -> Vec<DirStat> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).unwrap();
        let rel = d.strip_prefix(root).unwrap().to_path_buf();
        out.push((
            rel,
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            (m.mtime(), m.mtime_nsec()),
        ));
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Directories come back as tar gives them: empty ones made, modes (a 0500 one still
/// receives its files: modes and mtimes are set after the contents, deepest first) and
/// mtimes to the nanosecond; they are recorded apart from the files, and a rerun of the
/// delivery records none again.
#[test]
fn directories_come_back_with_modes_and_mtimes_empty_ones_too() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src, "ro/f", b"in a read-only directory\n");
    write(&src, "x/y/g", b"deep\n");
    std::fs::create_dir_all(src.join("empty/inner")).unwrap();
    let set = |rel: &str, mode: u32, when: i64| {
        let p = src.join(rel);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(when, 123_456_789))
            .unwrap();
    };
    set("empty/inner", 0o700, 1_500_000_000);
    set("empty", 0o755, 1_500_000_100);
    set("x/y", 0o750, 1_600_000_000);
    set("x", 0o711, 1_600_000_100);
    set("ro", 0o500, 1_700_000_000);
    let out = t.path().join("out");
    let (v, err) = deliver_reporting(&src, &out);
    assert!(err.contains("and 6 directories"), "{err}");
    assert_eq!(v["totals"]["succeeded"], 2, "directories are not files");
    assert_eq!(v["totals"]["dirs"], 6);
    let manifest = || std::fs::read_to_string(out.join(".ferry-manifest.json")).unwrap();
    let before = manifest();
    ferry()
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .assert()
        .success();
    assert_eq!(
        manifest(),
        before,
        "an unchanged tree records nothing again"
    );

    let back = t.path().join("back");
    restore(&out, &back)
        .arg("-n")
        .assert()
        .success()
        .stderr(predicate::str::contains("and 6 directories"));
    restore(&out, &back)
        .assert()
        .success()
        .stderr(predicate::str::contains("2 succeeded"));
    let by_tar = tar_copy(&src, ".", &t.path().join("tar"));
    // The restored root is DEST/src (ferry records the input root under its name);
    // tar's is its DEST itself, given "."'s mode and mtime.
    let ours = dir_stats(&back.join("src"));
    let theirs = dir_stats(&by_tar);
    assert_eq!(ours, theirs, "directories against tar");
    assert_eq!(
        std::fs::read(back.join("src/ro/f")).unwrap(),
        b"in a read-only directory\n"
    );
    // Verify has no object to read for a directory.
    verify_dir(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("verified 2 objects: 2 ok"));
}
