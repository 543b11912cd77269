//! Cancellation end to end: Ctrl-C (SIGINT/SIGTERM), --timeout, and the library token.

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

fn interrupt_mid_run(signal: i32) {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/first.txt", &text(1000, 1));
    write(t.path(), "d/second.txt", &text(1000, 2));
    let out = t.path().join("out");
    // Paths come from stdin, which stays open: the run cannot end by itself, so the signal
    // is what ends it, and the producer is blocked in a read when it arrives.
    let mut ferry =
        listing_from_open_stdin(t.path(), &["-v", "--report", "-"], &out, b"d/first.txt\n");
    // Wait for the pipeline's own event: the first file delivered.
    ferry.wait_for("[done]");
    ferry.signal(signal);
    let (status, err, stdout) = ferry.finish();
    assert_eq!(status.code(), Some(130));
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("1 succeeded"), "{err}");
    let v = report(&stdout);
    assert_eq!(v["cancelled"], "interrupted");
    assert_eq!(gunzip(&out.join("d/first.txt.gz")), text(1000, 1));
    outputs_are_whole(&out);
}

/// Starts `ferry ARGS --to OUT` in `dir` reading paths from a stdin that stays open, and
/// sends it one path: the run cannot end by reaching the end of its list.
fn listing_from_open_stdin(dir: &Path, args: &[&str], out: &Path, first: &[u8]) -> Running {
    let mut ferry = Running::spawn_in(
        Some(dir),
        ["--files-from", "-"]
            .iter()
            .chain(args)
            .map(OsStr::new)
            .chain([OsStr::new("--to"), out.as_os_str()]),
    );
    let stdin = ferry.stdin.as_mut().unwrap();
    stdin.write_all(first).unwrap();
    stdin.flush().unwrap();
    ferry
}

#[test]
fn sigint_stops_the_run_prints_the_summary_and_exits_130() {
    interrupt_mid_run(libc::SIGINT);
}

#[test]
fn sigterm_is_handled_like_ctrl_c() {
    interrupt_mid_run(libc::SIGTERM);
}

#[test]
fn a_deadline_cancels_the_rest_and_names_the_cause() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..300 {
        write(&src, &format!("d{}/f{i}", i % 7), &text(20_000, i));
    }
    let out = t.path().join("out");
    let r = ferry()
        .arg(&src)
        .args([
            "--timeout",
            "1ns",
            "-j",
            "1",
            "--queue",
            "1",
            "--report",
            "-",
            "--to",
        ])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicates::str::contains("deadline reached"));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["cancelled"], "deadline reached");
    // The deadline may even fire before anything is discovered: then nothing is counted,
    // which is right (producers stop). Either way the run did not finish.
    assert!(v["totals"]["succeeded"].as_u64().unwrap() < 300, "{v}");
    outputs_are_whole(&out);
    // A rerun delivers the rest and skips what was done.
    let v2 = deliver(&src, &out);
    assert_eq!(v2["totals"]["discovered"], 300);
    assert_eq!(
        v2["totals"]["skipped"].as_u64(),
        v["totals"]["succeeded"].as_u64()
    );
    outputs_are_whole(&out);
}

#[test]
fn the_library_token_cancels_without_signals() {
    use ferry::pipeline::{CancelReason, CancelToken};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..50 {
        write(&src, &format!("f{i}"), &text(5000, i));
    }
    let config =
        ferry::Config::builder(vec![src], ferry::sink::SinkSpec::Dir(t.path().join("out")))
            .queue(std::num::NonZeroUsize::MIN)
            .build()
            .unwrap();
    let token = CancelToken::new();
    token.cancel(CancelReason::Requested);
    let s = ferry::run(&config, token).unwrap();
    assert_eq!(s.totals.succeeded, 0);
    assert_eq!(s.totals.cancelled, s.totals.discovered);
    assert_eq!(s.exit_code(), ferry::ExitCode::Failures);
    assert_eq!(s.cancelled.as_deref(), Some("cancelled"));
    let out = t.path().join("out");
    assert!(files_under(&out)
        .iter()
        .all(|p| p.extension() != Some("gz".as_ref())));
}

#[test]
fn a_deadline_ends_a_run_whose_file_list_never_closes() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/first.txt", &text(1000, 1));
    let out = t.path().join("out");
    // stdin stays open for the whole test: only the deadline can end the run.
    let args = ["--timeout", "1s", "--report", "-"];
    let ferry = listing_from_open_stdin(t.path(), &args, &out, b"d/first.txt\n");
    let (status, err, stdout) = ferry.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("deadline reached"), "{err}");
    assert_eq!(report(&stdout)["cancelled"], "deadline reached");
}

#[test]
fn the_report_file_appears_whole_under_its_name() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(&src, "a", b"a");
    let target = t.path().join("report.json");
    std::fs::write(&target, b"an older report").unwrap();
    ferry()
        .arg(&src)
        .arg("--report")
        .arg(&target)
        .arg("--to")
        .arg(t.path().join("out"))
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(v["totals"]["succeeded"], 1);
    let names: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("ferry-tmp")), "{names:?}");
}

/// Ctrl-C during `ferry verify` (issue 22): it stops, says how far it got, exits 130. The
/// check is held mid-run by an object that is a FIFO: the test's own open of it for
/// writing returns exactly when verify has opened it to read.
#[test]
fn sigint_stops_verify_with_130() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "in/a.txt", b"a");
    let out = t.path().join("out");
    deliver(&t.path().join("in"), &out);
    let obj = out.join("in/a.txt.gz");
    fifo_in_place_of(&obj);
    let mut verify = Running::spawn([OsStr::new("verify"), OsStr::new("--to"), out.as_os_str()]);
    let writer = std::fs::OpenOptions::new().write(true).open(&obj).unwrap();
    verify.signal(libc::SIGINT);
    // The object ends only once ferry has seen the interrupt (it says so).
    verify.wait_for("interrupted; finishing up");
    drop(writer);
    let (status, err, _) = verify.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: verified"), "{err}");
}

/// Replaces the object at `obj` by a FIFO: a reader's open of it waits for the test's
/// open for writing, which returns exactly when the reader has opened it: mid-run.
fn fifo_in_place_of(obj: &Path) {
    std::fs::remove_file(obj).unwrap();
    let c = std::ffi::CString::new(obj.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// The summary's totals add up: every file found ended as exactly one of succeeded,
/// skipped, failed or cancelled.
fn adds_up(v: &serde_json::Value) {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert_eq!(
        n("discovered"),
        n("succeeded") + n("skipped") + n("failed") + n("cancelled"),
        "{v}"
    );
}

/// Ctrl-C during `ferry restore` (issue 22): it stops, prints a summary that adds up,
/// exits 130. The restore is held mid-run by an object that is a FIFO: the test's own
/// open of it for writing returns exactly when restore has opened it to read.
#[test]
fn sigint_stops_restore_with_130_and_a_summary_that_adds_up() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write(t.path(), &format!("in/f{i:02}.txt"), &text(100, i));
    }
    let out = t.path().join("out");
    deliver(&t.path().join("in"), &out);
    let obj = out.join("in/f10.txt.gz");
    fifo_in_place_of(&obj);
    let dest = t.path().join("dest");
    let mut restore = Running::spawn([
        OsStr::new("restore"),
        OsStr::new("--download-workers"),
        OsStr::new("1"),
        OsStr::new("--report"),
        OsStr::new("-"),
        OsStr::new("--from"),
        out.as_os_str(),
        dest.as_os_str(),
    ]);
    let writer = std::fs::OpenOptions::new().write(true).open(&obj).unwrap();
    restore.signal(libc::SIGINT);
    restore.wait_for("interrupted; finishing up");
    drop(writer);
    let (status, err, stdout) = restore.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let v = report(&stdout);
    assert_eq!(v["cancelled"], "interrupted");
    let totals = &v["totals"];
    adds_up(totals);
    assert_eq!(totals["discovered"], 20, "{v}");
    // The object cut short by the interrupted writer is not restored under its name.
    assert!(!dest.join("in/f10.txt").exists());
    // What was restored is whole; nothing else is there.
    for f in files_under(&dest) {
        let i: u64 = f.file_stem().unwrap().to_string_lossy()[1..3]
            .parse()
            .unwrap();
        assert_eq!(
            std::fs::read(dest.join(&f)).unwrap(),
            text(100, i),
            "{}",
            f.display()
        );
    }
}

/// Ctrl-C during `ferry plan` (issue 22): no plan is stored, it says how far the walk got
/// in numbers that add up, exits 130. The walk is held mid-run by its file list, a stdin
/// that stays open; the entry it has seen is a directory, which -v names as left out.
#[test]
fn sigint_stops_plan_with_130_and_no_plan_stored() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "d/a.txt", b"a");
    std::fs::create_dir_all(t.path().join("d/sub")).unwrap();
    let out = t.path().join("out");
    let mut plan = Running::spawn_in(
        Some(t.path()),
        [
            OsStr::new("plan"),
            OsStr::new("-v"),
            OsStr::new("--files-from"),
            OsStr::new("-"),
            OsStr::new("--shards"),
            OsStr::new("2"),
            OsStr::new("--report"),
            OsStr::new("-"),
            OsStr::new("--to"),
            out.as_os_str(),
        ],
    );
    let stdin = plan.stdin.as_mut().unwrap();
    stdin.write_all(b"d/a.txt\nd/sub\n").unwrap();
    stdin.flush().unwrap();
    plan.wait_for("[skip]");
    plan.signal(libc::SIGINT);
    let (status, err, stdout) = plan.finish();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted: no plan was stored; of 2 entries found, 1 planned, 1 left out"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&stdout).expect("report is JSON");
    assert_eq!(v["stored"], false, "{v}");
    let n = |k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n("found"),
        n("planned") + n("left_out") + n("unreadable") + n("cancelled")
    );
    let plans: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        plans
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".ferry-plan.")),
        "{plans:?}"
    );
}
