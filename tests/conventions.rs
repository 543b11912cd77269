//! The CLI conventions of fd, ripgrep and rclone: subcommands for completions and the
//! manual, environment variables for flags, `--dry-run`, `--exclude-from`, size filters,
//! and a `--version` that says what was built in.

mod common;

use common::*;
use predicates::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("s");
    write(&src, "small.txt", b"tiny");
    write(&src, "mid.log", &text(5_000, 1));
    write(&src, "big.log", &text(200_000, 2));
    write(&src, "build/out.o", &text(3_000, 3));
    write(&src, "notes.tmp", &text(2_000, 4));
    src
}

/// The binary alone: `ferry()` puts flags before what would be the subcommand.
fn bare() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("ferry").unwrap()
}

fn delivered(out: &Path) -> BTreeSet<String> {
    files_under(out)
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".gz"))
        .collect()
}

#[test]
fn version_names_the_engine_and_the_sinks_built_in() {
    let engine = if cfg!(feature = "libdeflate") {
        "gzip engine: libdeflate"
    } else {
        "gzip engine: zlib-rs"
    };
    ferry()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::contains(engine).and(predicate::str::contains("sinks: dir, sim")));
}

#[test]
fn help_for_to_names_every_sink_scheme_and_the_environment_variables() {
    let help = ferry()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(help).unwrap();
    for word in [
        "dir:PATH",
        "s3://bucket/prefix",
        "gs://bucket/prefix",
        "az://container/prefix",
        "sim:",
        "[env: FERRY_TO=]",
        "[env: FERRY_JOBS=]",
        "[env: FERRY_UPLOAD_WORKERS=]",
        "[env: FERRY_SHARD=]",
        "[env: FERRY_LEVEL=]",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
}

#[test]
fn completions_for_every_shell_and_a_manual_page() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = bare().args(["completions", shell]).assert().success();
        let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        // Generated from the real command: its flags and subcommands are in it.
        assert!(script.contains("dry-run"), "{shell}");
        assert!(script.contains("verify"), "{shell}");
    }
    // The bash script is valid bash.
    let out = bare().args(["completions", "bash"]).output().unwrap();
    let t = tempfile::tempdir().unwrap();
    let script = t.path().join("ferry.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
    bare()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'tcsh'"));

    let man = bare().arg("man").assert().success();
    let page = String::from_utf8(man.get_output().stdout.clone()).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH ferry"),
        "{}",
        &page[..200]
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        "\\-\\-dry\\-run",
        "FERRY_TO",
    ] {
        assert!(page.contains(section), "the manual lacks {section}");
    }
}

#[test]
fn environment_variables_set_flags_and_flags_win() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    let from_env = t.path().join("env-out");
    ferry()
        .env("FERRY_TO", format!("dir:{}", from_env.display()))
        .env("FERRY_SHARD", "0/2")
        .arg(&src)
        .assert()
        .success();
    let flag_out = t.path().join("flag-out");
    ferry()
        .env("FERRY_TO", format!("dir:{}", from_env.display()))
        .env("FERRY_SHARD", "1/2")
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", flag_out.display()))
        .assert()
        .success();
    let (a, b) = (delivered(&from_env), delivered(&flag_out));
    assert!(!a.is_empty() && !b.is_empty(), "{a:?} {b:?}");
    assert!(a.is_disjoint(&b));
    assert_eq!(a.len() + b.len(), 5);
    // A bad value from the environment is a usage error naming the variable's flag.
    ferry()
        .env("FERRY_JOBS", "0")
        .arg(&src)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--jobs"));
}

#[test]
fn exclude_from_and_size_filters_leave_files_out_uncounted() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    let list = t.path().join("ignore.txt");
    std::fs::write(&list, "# build outputs\nbuild/\n\n*.tmp\r\n").unwrap();
    let out = t.path().join("out");
    ferry()
        .arg(&src)
        .arg("--exclude-from")
        .arg(&list)
        .args(["--min-size", "100", "--max-size", "100KiB"])
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .assert()
        .success()
        .stderr(predicate::str::contains("1 discovered: 1 succeeded"));
    assert_eq!(
        delivered(&out),
        BTreeSet::from(["s/mid.log.gz".to_string()])
    );
    ferry()
        .arg(&src)
        .args(["--exclude-from", "/nonexistent/list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--exclude-from /nonexistent/list: no such file",
        ));
    ferry()
        .arg(&src)
        .args(["--min-size", "2KiB", "--max-size", "1KiB"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--min-size"));
}

#[test]
fn object_store_flags_on_a_local_sink_are_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let src = tree(t.path());
    ferry()
        .arg(&src)
        .args(["--to", "dir:x", "--storage-class", "GLACIER_IR"])
        .current_dir(t.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--storage-class only apply to an object store",
        ));
    assert!(!t.path().join("x").exists());
}

/// What `strace` saw opened: every path passed to `openat`, with its flags.
#[cfg(ferry_test_strace)]
fn opened_under_strace(
    args: &[&std::ffi::OsStr],
    dir: &Path,
) -> (std::process::Output, Vec<String>) {
    let log = dir.join("strace.log");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat", "-o"])
        .arg(&log)
        .arg(assert_cmd::cargo::cargo_bin("ferry"))
        .args(["--progress", "never"])
        .args(args)
        .output()
        .unwrap();
    let opened = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("openat("))
        .map(str::to_string)
        .collect();
    (out, opened)
}

/// A dry run lists what would be sent (new and changed files) and skipped (unchanged
/// ones), says so in the summary and report, opens no source file (strace watches), and
/// leaves the sink exactly as it was.
#[test]
#[cfg_attr(not(ferry_test_strace), ignore = "needs strace")]
fn a_dry_run_lists_sends_and_skips_and_touches_nothing() {
    #[cfg(ferry_test_strace)]
    {
        let t = tempfile::tempdir().unwrap();
        let src = tree(t.path());
        let out = t.path().join("out");
        // A first, real run; then one file changes and one is new.
        ferry()
            .arg(&src)
            .arg("--to")
            .arg(format!("dir:{}", out.display()))
            .assert()
            .success();
        write(&src, "mid.log", &text(6_000, 9));
        write(&src, "new/fresh.txt", &text(700, 5));
        let before: Vec<(PathBuf, Vec<u8>)> = files_under(&out)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(out.join(&p)).unwrap();
                (p, bytes)
            })
            .collect();
        let to = format!("dir:{}", out.display());
        let (run, opened) = opened_under_strace(
            &[
                src.as_os_str(),
                "--to".as_ref(),
                to.as_ref(),
                "-n".as_ref(),
                "--report".as_ref(),
                "-".as_ref(),
            ],
            t.path(),
        );
        assert_eq!(run.status.code(), Some(0));
        let listing = String::from_utf8_lossy(&run.stderr);
        for line in [
            format!("would send: {} (", src.join("mid.log").display()),
            format!("would send: {} (", src.join("new/fresh.txt").display()),
            format!(
                "would skip: {} (unchanged since last run)",
                src.join("big.log").display()
            ),
        ] {
            assert!(listing.contains(&line), "missing {line:?} in:\n{listing}");
        }
        assert!(listing.contains("ferry: dry run: 2 files"), "{listing}");
        assert!(listing.contains("nothing was read or written"), "{listing}");
        let report = report(&run.stdout);
        assert_eq!(report["dry_run"], true);
        assert_eq!(report["would_send"]["files"], 2);
        assert_eq!(report["would_send"]["bytes"], 6_000 + 700);
        assert_eq!(report["totals"]["skipped"], 6);
        assert_eq!(report["totals"]["succeeded"], 0);
        // No source file was opened (directories are, to walk them).
        let src_text = src.display().to_string();
        let files_opened: Vec<&String> = opened
            .iter()
            .filter(|l| l.contains(&src_text) && !l.contains("O_DIRECTORY"))
            .collect();
        assert!(files_opened.is_empty(), "{files_opened:#?}");
        // The sink is byte for byte as it was.
        let after: Vec<(PathBuf, Vec<u8>)> = files_under(&out)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(out.join(&p)).unwrap();
                (p, bytes)
            })
            .collect();
        assert_eq!(before, after);

        // Into a sink that does not exist: everything would be sent, nothing is created.
        let none = t.path().join("none");
        ferry()
            .arg(&src)
            .arg("--to")
            .arg(format!("dir:{}", none.display()))
            .arg("--dry-run")
            .assert()
            .success()
            .stdout(predicate::str::contains("would send:").count(6));
        assert!(!none.exists());
    }
}
