//! A crash costs at most the last journal flush (design promise 7): ferry is killed with
//! SIGKILL at several points of a run over thousands of files — picked by its own `-vv`
//! events, never a clock — and the rerun skips everything journaled, delivers the rest
//! exactly once, and leaves a manifest listing every output exactly once.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;

const FILES: usize = 2000;

fn tree(dir: &Path) {
    for i in 0..FILES {
        write(
            dir,
            &format!("d{}/f{i:04}", i % 10),
            &text(200 + i % 300, i as u64),
        );
    }
}

/// Files journaled durably, from the last `[journal] flushed N records (T in all)` line
/// (the directories' records, which come after every file's, not counted).
fn journaled(stderr: &str) -> u64 {
    let records: u64 = stderr
        .lines()
        .filter_map(|l| l.split(" records (").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0);
    records.min(FILES as u64)
}

/// The keys of the files the manifest at `out` lists (not its directories), checking
/// each entry appears once and the header counts them all.
fn manifest_keys(out: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(out.join(".ferry-manifest.json")).unwrap();
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let (mut keys, mut all) = (BTreeSet::new(), BTreeSet::new());
    for l in lines {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        let key = e["key"].as_str().unwrap().to_string();
        assert!(all.insert(key.clone()), "{key} listed twice");
        if e["dir"] != true {
            keys.insert(key);
        }
    }
    assert_eq!(header["entries"].as_u64(), Some(all.len() as u64));
    keys
}

/// Kills a run when `point` matches a stderr line, reruns, and checks the promise.
fn kill_then_rerun(name: &str, point: impl Fn(&str) -> bool) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    tree(&src);
    let out = t.path().join("out");
    let mut ferry = Running::spawn([
        src.as_os_str(),
        "--to".as_ref(),
        out.as_os_str(),
        "-vv".as_ref(),
        "-j".as_ref(),
        "1".as_ref(),
        "--journal-every".as_ref(),
        "100".as_ref(),
    ]);
    ferry.wait_until(name, point);
    ferry.signal(libc::SIGKILL);
    let (status, err, _) = ferry.finish();
    assert_eq!(status.code(), None, "{name}: killed");
    let durable = journaled(&err);

    let v = deliver(&src, &out);
    let n = |k: &str| v["totals"][k].as_u64().unwrap();
    assert_eq!(n("discovered"), FILES as u64, "{name}");
    assert_eq!(n("succeeded") + n("skipped"), FILES as u64, "{name}: {v}");
    assert!(
        n("skipped") >= durable,
        "{name}: {durable} were journaled but only {} skipped",
        n("skipped")
    );
    assert_eq!(outputs_are_whole(&out), FILES, "{name}");
    assert_eq!(manifest_keys(&out).len(), FILES, "{name}");
    let left: Vec<_> = files_under(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".ferry-journal"))
        .collect();
    assert!(
        left.is_empty(),
        "{name}: journal left after the rerun: {left:?}"
    );
    // And a third run has nothing to do.
    assert_eq!(deliver(&src, &out)["totals"]["skipped"], FILES as u64);
}

#[test]
fn killed_early_the_rerun_delivers_everything() {
    kill_then_rerun("the walk starting", |l| l.contains("walk worker 0 started"));
}

#[test]
fn killed_midway_the_rerun_skips_what_was_journaled() {
    kill_then_rerun("half the files journaled", |l| {
        journaled(l) >= FILES as u64 / 2
    });
}

#[test]
fn killed_during_a_journal_flush_the_rerun_skips_what_was_journaled() {
    kill_then_rerun("a flush after the first", |l| {
        l.contains("[journal] flushing") && !l.contains("0000000000")
    });
}

#[test]
fn killed_during_compaction_the_rerun_merges_manifest_and_journal() {
    kill_then_rerun("compaction", |l| l.contains("[manifest] compacting"));
}

#[test]
fn a_torn_last_journal_record_is_ignored_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..20 {
        write(&src, &format!("f{i}"), &text(500, i));
    }
    let out = t.path().join("out");
    deliver(&src, &out);
    // A crash while a segment was written: one whole record, then one cut off.
    let manifest = std::fs::read_to_string(out.join(".ferry-manifest.json")).unwrap();
    let whole = manifest.lines().nth(1).unwrap();
    let torn = &manifest.lines().nth(2).unwrap()[..30];
    std::fs::write(
        out.join(".ferry-journal.0000000007.jsonl"),
        format!("{whole}\n{torn}"),
    )
    .unwrap();
    let r = ferry()
        .arg(&src)
        .args(["--report", "-", "--to"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicates::str::contains(
            ".ferry-journal.0000000007.jsonl: ignored its last record",
        ));
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["skipped"], 20);
    assert_eq!(manifest_keys(&out).len(), 20);
    assert!(!out.join(".ferry-journal.0000000007.jsonl").exists());
}

#[test]
fn a_damaged_manifest_stops_a_run_and_force_replaces_it() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    for i in 0..5 {
        write(&src, &format!("f{i}"), &text(100, i));
    }
    let out = t.path().join("out");
    deliver(&src, &out);
    std::fs::write(
        out.join(".ferry-manifest.json"),
        "{\"ferry_manifest\":2,\"entries\":1}\nnot json\n",
    )
    .unwrap();
    ferry()
        .arg(&src)
        .arg("--to")
        .arg(&out)
        .assert()
        .code(4)
        .stderr(predicates::str::contains(".ferry-manifest.json is damaged"));
    let r = ferry()
        .arg(&src)
        .args(["--force", "--report", "-", "--to"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["succeeded"], 5);
    assert_eq!(manifest_keys(&out).len(), 5);
    assert_eq!(deliver(&src, &out)["totals"]["skipped"], 5);
}

/// Writes a manifest of `n` entries of earlier runs (keys under `old/`, none of them this
/// test's files) at `out`.
fn big_manifest(out: &Path, n: usize) -> Vec<u8> {
    let mut text = format!("{{\"ferry_manifest\":2,\"entries\":{n}}}\n");
    for i in 0..n {
        text.push_str(&format!(
            "{{\"key\":\"old/f{i:06}\",\"size\":1,\"mtime_s\":1,\"mtime_ns\":0,\"crc32\":0,\"bytes_out\":21}}\n"
        ));
    }
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join(".ferry-manifest.json"), &text).unwrap();
    text.into_bytes()
}

fn journal_segments(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".ferry-journal."))
        .collect();
    names.sort();
    names
}

#[test]
fn a_few_files_added_to_a_big_history_leave_its_manifest_as_it_was_until_the_journal_grows() {
    let t = tempfile::tempdir().unwrap();
    let (src, out) = (t.path().join("s"), t.path().join("out"));
    let before = big_manifest(&out, 70_000);
    write(&src, "a.txt", &text(300, 1));
    let r = ferry()
        .arg(&src)
        .args(["-vv", "--report", "-", "--to"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["succeeded"], 1);
    let stderr = String::from_utf8_lossy(&r.get_output().stderr).to_string();
    assert!(
        stderr.contains("[manifest] journal left unfolded"),
        "{stderr}"
    );
    // The manifest was not read twice and written again for one file: it is as it was,
    // and the file's entry is in the journal, which the next run reads.
    assert_eq!(
        std::fs::read(out.join(".ferry-manifest.json")).unwrap(),
        before
    );
    let segments = journal_segments(&out);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let journal = std::fs::read_to_string(out.join(&segments[0])).unwrap();
    assert!(journal.contains("a.txt"), "{journal}");
    let r = ferry()
        .arg(&src)
        .args(["--report", "-", "--to"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(report(&r.get_output().stdout)["totals"]["skipped"], 1);
    // Segments of earlier runs, 63 of them: the next run's makes 64, and it folds them
    // all into the manifest, each entry once.
    let old = std::fs::read_to_string(out.join(&segments[0])).unwrap();
    for seq in 100..163 {
        let line = old
            .lines()
            .next()
            .unwrap()
            .replace("a.txt", &format!("j{seq}.txt"));
        std::fs::write(
            out.join(format!(".ferry-journal.{seq:010}.jsonl")),
            line + "\n",
        )
        .unwrap();
    }
    write(&src, "b.txt", &text(300, 2));
    ferry().arg(&src).arg("--to").arg(&out).assert().success();
    assert_eq!(journal_segments(&out), Vec::<String>::new());
    let keys = manifest_keys(&out);
    assert_eq!(keys.len(), 70_000 + 63 + 2, "{}", keys.len());
    assert!(
        keys.iter().any(|k| k.ends_with("/a.txt")) && keys.iter().any(|k| k.ends_with("/b.txt"))
    );
}
