//! CLI tests: what a user sees, on real files in temp dirs.

mod common;

use common::*;
use predicates::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

#[test]
fn a_directory_is_delivered_under_its_own_name_and_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("logs");
    let files = [
        ("a/b.log", text(50_000, 1)),
        ("c.txt", text(10, 2)),
        (".hidden", b"secret".to_vec()),
        ("empty", Vec::new()),
    ];
    for (rel, data) in &files {
        write(&src, rel, data);
    }
    let out = t.path().join("out");
    ferry()
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .assert()
        .success()
        .stderr(predicate::str::contains("4 discovered: 4 succeeded"));
    for (rel, data) in &files {
        assert_eq!(
            &gunzip(&out.join("logs").join(format!("{rel}.gz"))),
            data,
            "{rel}"
        );
    }
    // Nothing but outputs and the manifest: no temp files.
    let got = files_under(&out);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(out.join(".ferry-manifest.json").exists());
}

#[test]
fn a_single_file_input_and_the_default_sink() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "x.csv", b"a,b\n1,2\n");
    ferry()
        .current_dir(t.path())
        .arg("x.csv")
        .assert()
        .success();
    assert_eq!(gunzip(&t.path().join("ferry-out/x.csv.gz")), b"a,b\n1,2\n");
}

#[test]
fn inputs_whose_keys_collide_are_a_usage_error_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "a/logs/1", b"1");
    write(t.path(), "b/logs/2", b"2");
    let out = t.path().join("out");
    ferry()
        .arg(t.path().join("a/logs"))
        .arg(t.path().join("b/logs"))
        .arg("--to")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "would both be delivered under 'logs'",
        ));
    assert!(!out.exists());
}

#[test]
fn header_keeps_name_and_mtime_and_levels_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let f = write(t.path(), "in/data.bin", &text(100_000, 3));
    filetime::set_file_mtime(&f, filetime::FileTime::from_unix_time(1_600_000_000, 0)).unwrap();
    let mut sizes = Vec::new();
    for level in ["-1", "-9", "--level=0", "-l6"] {
        let out = t.path().join(format!("out{level}"));
        ferry()
            .arg(t.path().join("in"))
            .arg(level)
            .arg("--to")
            .arg(&out)
            .assert()
            .success();
        let gz = out.join("in/data.bin.gz");
        assert_eq!(gunzip(&gz), text(100_000, 3));
        let bytes = std::fs::read(&gz).unwrap();
        let d = flate2::read::GzDecoder::new(&bytes[..]);
        let h = d.header().unwrap();
        assert_eq!(h.filename(), Some(&b"data.bin"[..]));
        assert_eq!(h.mtime(), 1_600_000_000);
        sizes.push(bytes.len());
    }
    assert!(sizes[2] > sizes[0] && sizes[0] > sizes[1], "{sizes:?}");
    ferry()
        .arg(t.path().join("in"))
        .arg("-l")
        .arg("10")
        .assert()
        .code(2);
}

#[test]
fn big_files_are_segmented_and_output_is_identical_for_any_worker_counts() {
    let t = tempfile::tempdir().unwrap();
    let data = text(700_000, 4);
    write(t.path(), "in/big.log", &data);
    write(t.path(), "in/exact.log", &text(65536, 5));
    write(t.path(), "in/plus1.log", &text(65537, 6));
    let runs: [&[&str]; 3] = [
        &[
            "-j",
            "1",
            "--load-workers",
            "1",
            "--upload-workers",
            "1",
            "--queue",
            "1",
        ],
        &[
            "-j",
            "4",
            "--load-workers",
            "3",
            "--upload-workers",
            "5",
            "--queue",
            "2",
        ],
        &["-j", "3", "--queue", "1", "--memory", "128KiB"],
    ];
    let mut outputs = Vec::new();
    for (i, args) in runs.iter().enumerate() {
        let out = t.path().join(format!("out{i}"));
        ferry()
            .arg(t.path().join("in"))
            .args(["--segment-size", "64KiB"])
            .args(*args)
            .arg("--to")
            .arg(&out)
            .assert()
            .success();
        assert_eq!(gunzip(&out.join("in/big.log.gz")), data);
        assert_eq!(gunzip(&out.join("in/plus1.log.gz")), text(65537, 6));
        let names = ["big.log.gz", "exact.log.gz", "plus1.log.gz"];
        outputs.push(names.map(|n| std::fs::read(out.join("in").join(n)).unwrap()));
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "bytes depend on worker counts"
    );
}

/// Without `-L`, a symbolic link is recorded as an entry holding its text (no object, not
/// followed, dangling or not); with `-L` it is followed, a dangling one fails and a loop
/// ends.
#[test]
fn symlinks_are_recorded_unless_followed_and_loops_end() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src, "real/f.txt", b"content");
    std::os::unix::fs::symlink(src.join("real/f.txt"), src.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).unwrap();
    std::os::unix::fs::symlink(&src, src.join("real/loop")).unwrap();

    let out = t.path().join("o1");
    let r = ferry()
        .arg(&src)
        .args(["--report", "-", "-v"])
        .arg("--to")
        .arg(&out)
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 4);
    assert_eq!(v["totals"]["skipped"], 0);
    assert!(!out.join("src/link.txt.gz").exists());
    let manifest = std::fs::read_to_string(out.join(".ferry-manifest.json")).unwrap();
    let links: Vec<(String, String)> = manifest
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["link"].is_string())
        .map(|e| {
            (
                e["key"].as_str().unwrap().into(),
                e["link"].as_str().unwrap().into(),
            )
        })
        .collect();
    let src_text = src.display().to_string();
    assert_eq!(
        links,
        [
            ("src/dangling".to_string(), "nowhere".to_string()),
            ("src/link.txt".to_string(), format!("{src_text}/real/f.txt")),
            ("src/real/loop".to_string(), src_text.clone()),
        ]
    );

    let out = t.path().join("o2");
    let r = ferry()
        .arg(&src)
        .args(["-L", "--report", "-"])
        .arg("--to")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("dangling"));
    let v = report(&r.get_output().stdout);
    assert_eq!(gunzip(&out.join("src/link.txt.gz")), b"content");
    assert_eq!(v["totals"]["failed"], 1, "the dangling link");
    assert_eq!(v["totals"]["skipped"], 1, "the loop");
    assert_eq!(v["failures"][0]["stage"], "walk");
}

#[test]
fn fifos_and_sockets_are_never_opened() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write(&src, "ok.txt", b"fine");
    let fifo = src.join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let out = t.path().join("out");
    let r = ferry()
        .arg(&src)
        .args(["--report", "-", "-v"])
        .arg("--to")
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("named pipe (FIFO)"))
        .stderr(predicate::str::contains("socket"));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["skipped"], 2);
    assert_eq!(files_under(&out.join("src")), [Path::new("ok.txt.gz")]);
}

#[test]
fn an_output_directory_inside_the_input_is_never_read() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("d");
    write(&src, "a.txt", b"aaa");
    for _ in 0..2 {
        ferry()
            .arg(&src)
            .arg("--force")
            .arg("--to")
            .arg(src.join("out"))
            .assert()
            .success()
            .stderr(predicate::str::contains("1 discovered"));
    }
    assert_eq!(
        files_under(&src.join("out")),
        [Path::new(".ferry-manifest.json"), Path::new("d/a.txt.gz")]
    );
}

#[test]
fn include_and_exclude_globs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for rel in ["a.log", "b.txt", "tmp/c.log", "deep/x/d.log"] {
        write(&src, rel, rel.as_bytes());
    }
    let out = t.path().join("out");
    ferry()
        .arg(&src)
        .args(["--include", "*.log", "--exclude", "tmp/"])
        .arg("--to")
        .arg(&out)
        .assert()
        .success();
    assert_eq!(
        files_under(&out.join("s")),
        [Path::new("a.log.gz"), Path::new("deep/x/d.log.gz")]
    );
}

#[test]
fn reruns_skip_unchanged_files_and_force_rewrites() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a", b"one");
    let b = write(&src, "b", b"two");
    let out = t.path().join("out");
    let run = |extra: &[&str]| {
        let r = ferry()
            .arg(&src)
            .args(["--report", "-"])
            .args(extra)
            .arg("--to")
            .arg(&out)
            .assert()
            .success();
        report(&r.get_output().stdout)
    };
    assert_eq!(run(&[])["totals"]["succeeded"], 2);
    let v = run(&[]);
    assert_eq!(
        (
            v["totals"]["skipped"].as_u64(),
            v["totals"]["succeeded"].as_u64()
        ),
        (Some(2), Some(0))
    );
    std::fs::write(&b, b"changed").unwrap();
    filetime::set_file_mtime(&b, filetime::FileTime::from_unix_time(1_000_000, 0)).unwrap();
    let v = run(&[]);
    assert_eq!(
        (
            v["totals"]["skipped"].as_u64(),
            v["totals"]["succeeded"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(gunzip(&out.join("s/b.gz")), b"changed");
    // An output deleted by hand is delivered again.
    std::fs::remove_file(out.join("s/a.gz")).unwrap();
    assert_eq!(run(&[])["totals"]["succeeded"], 1);
    assert_eq!(run(&["--force"])["totals"]["succeeded"], 2);
}

#[test]
fn a_file_named_like_an_old_temp_is_the_users_and_stays() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a", b"x");
    let out = t.path().join("out");
    // What an older ferry took for a crashed run's temp (pid 0 never runs): a user's file.
    let mine = write(&out, "s/.ferry-tmp-0-12", b"half");
    ferry().arg(&src).arg("--to").arg(&out).assert().success();
    assert_eq!(std::fs::read(&mine).unwrap(), b"half");
    assert_eq!(
        files_under(&out.join("s")),
        [Path::new(".ferry-tmp-0-12"), Path::new("a.gz")]
    );
}

#[test]
fn files_from_with_a_missing_entry_fails_it_and_delivers_the_rest() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/one.txt", b"1");
    write(t.path(), "d/two.txt", b"22");
    std::fs::write(
        t.path().join("list"),
        "d/one.txt\nd/missing.txt\n\nd/two.txt\n",
    )
    .unwrap();
    let r = ferry()
        .current_dir(t.path())
        .args(["--files-from", "list", "--to", "dir:out", "--report", "-"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "ferry: d/missing.txt: no such file or directory",
        ));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 2);
    assert_eq!(v["failures"][0]["path"], "d/missing.txt");
    assert_eq!(gunzip(&t.path().join("out/d/two.txt.gz")), b"22");

    // NUL-separated on stdin, names with newlines and spaces.
    write(t.path(), "d/new\nline name", b"nl");
    ferry()
        .current_dir(t.path())
        .args(["--files-from", "-", "-0", "--to", "dir:out0"])
        .write_stdin(&b"d/one.txt\0d/new\nline name\0"[..])
        .assert()
        .success();
    assert_eq!(gunzip(&t.path().join("out0/d/new\nline name.gz")), b"nl");
}

#[test]
fn usage_errors_exit_2_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "s/a", b"a");
    let src = t.path().join("s");
    let cases: Vec<(Vec<OsString>, &str)> = vec![
        (vec!["--bogus".into()], "--bogus"),
        (
            vec![t.path().join("nope").into()],
            "no such file or directory",
        ),
        (
            vec![src.clone().into(), "--to".into(), "ftp://h/x".into()],
            "unknown sink type",
        ),
        (
            vec![src.clone().into(), "--segment-size".into(), "big".into()],
            "--segment-size",
        ),
        (
            vec![
                src.clone().into(),
                "--files-from".into(),
                "/nonexistent/list".into(),
            ],
            "--files-from",
        ),
        (vec![], "INPUT"),
        (
            vec![
                "verify".into(),
                "--to".into(),
                t.path().join("empty").into(),
            ],
            "no manifest",
        ),
        (
            vec![
                "plan".into(),
                src.clone().into(),
                "--shards".into(),
                "0".into(),
            ],
            "--shards",
        ),
    ];
    std::fs::create_dir(t.path().join("empty")).unwrap();
    for (args, msg) in cases {
        bare()
            .current_dir(t.path())
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(msg));
    }
    assert!(!t.path().join("ferry-out").exists());
}

/// ferry as a user types it, without the harness's `--progress never` (a flag before a
/// subcommand would make the subcommand an INPUT).
fn bare() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("ferry").unwrap()
}

/// Each class of error has its own exit code, from every command that can meet it:
/// 3 when the sink or the machine will not let the command start, 4 when what the sink
/// remembers is damaged. (2 is usage, above; 130 is Ctrl-C, in tests/cancel.rs; 70, a
/// panic outside any file, cannot be caused from outside and is tested in the library.)
#[test]
fn setup_and_damaged_history_errors_have_their_own_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "s/a", b"a");
    write(t.path(), "plain", b"");
    let src = t.path().join("s");
    let out = t.path().join("out");
    ferry().arg(&src).arg("--to").arg(&out).assert().success();
    let setup: Vec<Vec<OsString>> = vec![
        // A sink under a plain file.
        vec![
            src.clone().into(),
            "--to".into(),
            t.path().join("plain/sub").into(),
        ],
        // A DEST that cannot be made.
        vec![
            "restore".into(),
            "--from".into(),
            out.clone().into(),
            t.path().join("plain/dest").into(),
        ],
    ];
    for args in setup {
        bare()
            .args(&args)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("plain"));
    }
    std::fs::write(out.join(".ferry-manifest.json"), b"{ not a manifest").unwrap();
    let damaged: Vec<Vec<OsString>> = vec![
        vec![src.clone().into(), "--to".into(), out.clone().into()],
        vec!["verify".into(), "--to".into(), out.clone().into()],
        vec![
            "restore".into(),
            "--from".into(),
            out.clone().into(),
            t.path().join("back").into(),
        ],
    ];
    for args in damaged {
        bare()
            .args(&args)
            .assert()
            .code(4)
            .stderr(predicate::str::contains(".ferry-manifest.json"));
    }
    assert!(!t.path().join("back/s/a").exists());
    write(t.path(), "out/.ferry-report.shard-0-of-2.json", b"[");
    bare()
        .arg("report")
        .arg(&out)
        .assert()
        .code(4)
        .stderr(predicate::str::contains("damaged"));
}

#[test]
fn non_utf8_names_work_end_to_end() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    std::fs::create_dir_all(&src).unwrap();
    let name = OsString::from_vec(b"caf\xe9 \xff.txt".to_vec());
    std::fs::write(src.join(&name), b"bytes").unwrap();
    let out = t.path().join("out");
    ferry().arg(&src).arg("--to").arg(&out).assert().success();
    let mut gz = name.clone();
    gz.push(".gz");
    assert_eq!(gunzip(&out.join("s").join(gz)), b"bytes");
    // The manifest keeps the exact bytes, so the rerun recognises the file.
    let r = ferry()
        .arg(&src)
        .args(["--report", "-"])
        .arg("--to")
        .arg(&out)
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["skipped"], 1);
}

#[test]
fn quiet_is_silent_and_verbose_names_each_file() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a.log", &text(5000, 9));
    ferry()
        .arg(&src)
        .args(["-q", "--to"])
        .arg(t.path().join("o1"))
        .assert()
        .success()
        .stderr(predicate::str::is_empty());
    ferry()
        .arg(&src)
        .args(["-v", "--to"])
        .arg(t.path().join("o2"))
        .assert()
        .success()
        .stderr(predicate::str::is_match(r"\[done\] .*a\.log 4\.9 KiB → [\d.]+ (B|KiB)").unwrap());
    ferry()
        .arg(&src)
        .args(["-vv", "--to"])
        .arg(t.path().join("o3"))
        .assert()
        .success()
        .stderr(predicate::str::contains("[debug] compress worker"))
        .stderr(predicate::str::contains("output channel is closed"));
}

#[test]
fn report_has_the_documented_fields() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..20 {
        write(&src, &format!("f{i}"), &text(1000 * i, i as u64));
    }
    let rep = t.path().join("r.json");
    ferry()
        .arg(&src)
        .arg("--report")
        .arg(&rep)
        .arg("--to")
        .arg(t.path().join("o"))
        .assert()
        .success()
        .stderr(predicate::str::contains("p99 ms"));
    let v = report(&std::fs::read(&rep).unwrap());
    assert_eq!(v["totals"]["succeeded"], 20);
    assert!(v["totals"]["bytes_in"].as_u64().unwrap() > v["totals"]["bytes_out"].as_u64().unwrap());
    assert!(v["duration_s"].as_f64().unwrap() > 0.0);
    let names: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["walk", "load", "compress", "upload", "record"]);
    for s in v["stages"].as_array().unwrap() {
        for k in ["workers", "items", "busy_s", "p50_ms", "p99_ms"] {
            assert!(s[k].is_number(), "{k}");
        }
    }
    assert!(v["failures"].as_array().unwrap().is_empty());
}

#[test]
fn a_symlink_named_as_input_is_followed_like_find_h() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "real/a", b"hi");
    std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
    let out = t.path().join("out");
    let r = ferry()
        .arg(t.path().join("link"))
        .args(["--report", "-", "--to"])
        .arg(&out)
        .assert()
        .success();
    let v = report(&r.get_output().stdout);
    let n = |k: &str| v["totals"][k].as_u64().unwrap();
    assert_eq!((n("discovered"), n("succeeded")), (1, 1));
    assert_eq!(gunzip(&out.join("link/a.gz")), b"hi");
}

#[test]
fn every_flag_with_a_bad_value_exits_2_naming_the_flag_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "s/a", b"a");
    let cases: &[(&[&str], &str)] = &[
        (&["--level", "10"], "--level"),
        (&["--level=-3"], "--level"),
        (&["--jobs", "0"], "--jobs"),
        (&["--jobs", "many"], "--jobs"),
        (&["--load-workers", "0"], "--load-workers"),
        (&["--upload-workers", "0"], "--upload-workers"),
        (&["--queue", "0"], "--queue"),
        (&["--queue=-1"], "--queue"),
        (&["--segment-size", "0"], "--segment-size"),
        (&["--segment-size", "1 parsec"], "--segment-size"),
        (&["--memory=-5MiB"], "--memory"),
        (&["--timeout", "0s"], "--timeout"),
        (&["--timeout", "later"], "--timeout"),
        (&["--task-timeout", "x"], "--task-timeout"),
        (&["--retries=-1"], "--retries"),
        (&["--retry-backoff", "0ms"], "--retry-backoff"),
        (&["--shard", "3/3"], "--shard"),
        (&["--progress", "sometimes"], "--progress"),
        (&["--to", "gopher://x"], "--to"),
        (&["--to", "sim:latency=-1ms"], "--to"),
        (&["--include", "a/**/[z-a]"], "--include"),
        (&["--files-from", "/no/such/list"], "--files-from"),
    ];
    for (args, flag) in cases {
        ferry()
            .current_dir(t.path())
            .arg("s")
            .args(*args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(*flag));
    }
    assert!(
        !t.path().join("ferry-out").exists(),
        "a usage error wrote output"
    );
}

/// `examples/systemd/ferry-watch.service` parses as a unit: its sections, a hardened
/// sandbox (no new privileges, a read-only system, the logs read-only), SIGTERM to stop,
/// and an `ExecStart` that this ferry accepts as a `ferry watch` command line.
#[test]
fn the_example_systemd_unit_is_hardened_and_its_command_line_parses() {
    use clap::Parser;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/systemd/ferry-watch.service"),
    )
    .unwrap();
    let mut section = String::new();
    let mut keys: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not KEY=VALUE: {line}", n + 1));
        assert!(
            !section.is_empty(),
            "line {}: a key before any section",
            n + 1
        );
        keys.entry((section.clone(), k.trim().to_string()))
            .or_default()
            .push(v.trim().to_string());
    }
    let get = |s: &str, k: &str| keys.get(&(s.into(), k.into())).map(|v| v.join(" "));
    for s in ["Unit", "Service", "Install"] {
        assert!(keys.keys().any(|(sec, _)| sec == s), "no [{s}]");
    }
    assert_eq!(get("Service", "NoNewPrivileges").as_deref(), Some("yes"));
    assert_eq!(get("Service", "ProtectSystem").as_deref(), Some("strict"));
    assert_eq!(
        get("Service", "ReadOnlyPaths").as_deref(),
        Some("/var/log/app")
    );
    assert_eq!(get("Service", "KillSignal").as_deref(), Some("SIGTERM"));
    assert_eq!(
        get("Service", "ExecReload").as_deref(),
        Some("/bin/kill -HUP $MAINPID")
    );
    let exec = get("Service", "ExecStart").unwrap();
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert!(args[0].ends_with("/ferry"), "{exec}");
    let cli =
        ferry::cli::Cli::try_parse_from(std::iter::once("ferry").chain(args[1..].iter().copied()))
            .unwrap_or_else(|e| panic!("ExecStart does not parse: {e}"));
    let Some(ferry::cli::Command::Watch(w)) = cli.command else {
        panic!("ExecStart is not ferry watch: {exec}");
    };
    assert_eq!(w.settle, std::time::Duration::from_secs(30));
    assert_eq!(w.run.inputs, [std::path::PathBuf::from("/var/log/app")]);
}
