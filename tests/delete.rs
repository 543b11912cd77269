//! `--delete`: a run mirrors removals, removing only objects of its own history whose
//! sources are gone, refusing more than `--max-delete`, listing them in a dry run, and
//! leaving anything that is not what it stored.

mod common;

use common::*;
use predicates::prelude::*;

/// Two of five files are removed at the source: a dry run lists them and touches
/// nothing; `--max-delete 1` refuses the run before anything is sent; `--delete` removes
/// just their objects, counts them apart, and their entries leave the manifest, so verify
/// and restore pass and a rerun has nothing to delete. An object someone else put at the
/// sink, a file left out by a filter, and an object replaced by another of a different
/// size are all left alone.
#[test]
fn removals_are_mirrored_and_nothing_else_is_touched() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("logs");
    for i in 0..5 {
        write(&src, &format!("d/f{i}.log"), &text(3_000 + i, i as u64));
    }
    write(&src, "keep.tmp", b"left out by a filter later");
    let out = t.path().join("out");
    deliver_dir(&src, &out, &[]).success();
    // Not ferry's: never touched.
    std::fs::write(out.join("logs/d/theirs.gz"), b"someone else's").unwrap();
    std::fs::remove_file(src.join("d/f1.log")).unwrap();
    std::fs::remove_file(src.join("d/f3.log")).unwrap();

    let dry = deliver_dir(
        &src,
        &out,
        &["--delete", "-n", "--exclude", "*.tmp", "--report", "-"],
    )
    .success()
    .stderr(predicate::str::contains("would be deleted"));
    let listed = String::from_utf8_lossy(&dry.get_output().stderr).to_string();
    assert!(listed.contains("would delete: logs/d/f1.log"), "{listed}");
    assert!(listed.contains("would delete: logs/d/f3.log"), "{listed}");
    assert!(!listed.contains("keep.tmp"), "{listed}");
    assert_eq!(report(&dry.get_output().stdout)["totals"]["deleted"], 2);
    assert!(
        out.join("logs/d/f1.log.gz").exists(),
        "a dry run removes nothing"
    );

    deliver_dir(&src, &out, &["--delete", "--max-delete", "1"])
        .code(3)
        .stderr(predicate::str::contains("more than --max-delete 1"));
    assert!(out.join("logs/d/f1.log.gz").exists(), "refused whole");

    let r = deliver_dir(
        &src,
        &out,
        &["--delete", "--exclude", "*.tmp", "--report", "-"],
    )
    .success()
    .stderr(predicate::str::contains("2 objects deleted"));
    assert_eq!(report(&r.get_output().stdout)["totals"]["deleted"], 2);
    assert!(!out.join("logs/d/f1.log.gz").exists());
    assert!(!out.join("logs/d/f3.log.gz").exists());
    for kept in ["logs/d/f0.log.gz", "logs/d/theirs.gz", "logs/keep.tmp.gz"] {
        assert!(out.join(kept).exists(), "{kept}");
    }
    let manifest = std::fs::read_to_string(out.join(".ferry-manifest.json")).unwrap();
    assert!(!manifest.contains("f1.log") && !manifest.contains("f3.log"));
    verify_dir(&out).assert().success();
    let again = deliver_dir(&src, &out, &["--delete", "--report", "-"]).success();
    assert_eq!(report(&again.get_output().stdout)["totals"]["deleted"], 0);

    // Gone at the source, but what is at the sink is not what ferry stored: left, said.
    std::fs::remove_file(src.join("d/f4.log")).unwrap();
    std::fs::write(out.join("logs/d/f4.log.gz"), b"replaced by someone").unwrap();
    deliver_dir(&src, &out, &["--delete"])
        .success()
        .stderr(predicate::str::contains("f4.log.gz: left alone"));
    assert_eq!(
        std::fs::read(out.join("logs/d/f4.log.gz")).unwrap(),
        b"replaced by someone"
    );
}
