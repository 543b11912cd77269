//! `ferry plan` and planned shards: one walk, lists balanced by bytes, the same keys as a
//! plain run, changes after planning handled by name; one `verify` and one `report` for
//! every shard.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A tree of `n` files whose sizes spread over three orders of magnitude (log-uniform,
/// as the mixed corpus), some compressible, some not; returns the root.
fn mixed_tree(root: &Path, n: usize) -> PathBuf {
    let src = root.join("data");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // 1 KiB … 1 MiB, log-uniform.
        let size = (1024.0 * 1024f64.powf((x % 1000) as f64 / 1000.0)) as usize;
        let body = match i % 5 {
            0 => noise(size),
            _ => text(size, i as u64),
        };
        write(&src, &format!("d{}/f{i:03}.log", i % 7), &body);
    }
    src
}

/// `ferry SUBCOMMAND` (its flags after it), with a watchdog.
fn sub(name: &str) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("ferry").unwrap();
    c.arg(name).timeout(std::time::Duration::from_secs(120));
    c
}

fn plan(src: &Path, out: &Path, shards: u64) -> String {
    let o = sub("plan")
        .arg(src)
        .args(["--shards", &shards.to_string()])
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .assert()
        .success()
        .get_output()
        .clone();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn planned_run(src: &Path, out: &Path, id: &str, shard: &str) -> assert_cmd::assert::Assert {
    ferry()
        .args(["--plan", id, "--shard", shard])
        .arg(src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .args(["--report", "-"])
        .assert()
}

fn header(out: &Path, id: &str) -> serde_json::Value {
    let p = out.join(format!(".ferry-plan.{id}.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn four_planned_shards_are_balanced_by_bytes_and_deliver_what_a_plain_run_does() {
    let t = tempfile::tempdir().unwrap();
    let src = mixed_tree(t.path(), 160);
    let out = t.path().join("out");
    let id = plan(&src, &out, 4);
    let h = header(&out, &id);
    assert_eq!(h["version"], 1);
    assert_eq!(h["files"], 160);
    let bytes: Vec<u64> = h["shard_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    let mean = bytes.iter().sum::<u64>() as f64 / 4.0;
    let worst = *bytes.iter().max().unwrap() as f64 / mean;
    assert!(
        worst <= 1.05,
        "largest list {worst:.3}× the mean: {bytes:?}"
    );

    let mut delivered = 0;
    for k in 0..4 {
        let r = planned_run(&src, &out, &id, &format!("{k}/4")).success();
        let v = report(&r.get_output().stdout);
        assert_eq!(v["totals"]["discovered"], h["shard_files"][k], "{v}");
        delivered += v["totals"]["succeeded"].as_u64().unwrap();
    }
    assert_eq!(delivered, 160);

    // The same objects a plain run makes, byte for byte after decoding.
    let plain = t.path().join("plain");
    ferry()
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", plain.display()))
        .assert()
        .success();
    assert_eq!(sink_objects(&out), sink_objects(&plain));
    for rel in sink_objects(&out) {
        assert_eq!(
            gunzip(&out.join(&rel)),
            gunzip(&plain.join(&rel)),
            "{rel:?}"
        );
    }

    // One verify for every shard; one report adding them up.
    let v = sub("verify")
        .args(["--progress", "never", "--to"])
        .arg(format!("dir:{}", out.display()))
        .args(["--report", "-"])
        .assert()
        .success();
    let found: serde_json::Value = serde_json::from_slice(&v.get_output().stdout).unwrap();
    assert_eq!(found["checked"], 160, "{found}");
    let r = sub("report")
        .arg(format!("dir:{}", out.display()))
        .arg("--json")
        .assert()
        .success();
    let c: serde_json::Value = serde_json::from_slice(&r.get_output().stdout).unwrap();
    assert_eq!(c["totals"]["succeeded"], 160, "{c}");
    assert_eq!(c["shards"].as_array().unwrap().len(), 4);
    assert!(c["unfinished"].as_array().unwrap().is_empty(), "{c}");

    // A rerun of a shard skips what it delivered.
    let r = planned_run(&src, &out, &id, "2/4").success();
    let v = report(&r.get_output().stdout);
    assert_eq!(v["totals"]["succeeded"], 0, "{v}");
}

#[test]
fn a_file_gone_since_the_plan_fails_by_name_and_a_new_one_is_not_taken() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    for i in 0..6 {
        write(&src, &format!("f{i}.txt"), &text(2_000 + i * 100, i as u64));
    }
    let out = t.path().join("out");
    let id = plan(&src, &out, 2);
    std::fs::remove_file(src.join("f3.txt")).unwrap();
    write(&src, "new.txt", b"made after the plan");
    let mut failed = Vec::new();
    let mut total = 0;
    for k in 0..2 {
        let a = planned_run(&src, &out, &id, &format!("{k}/2"));
        let o = a.get_output();
        let v = report(&o.stdout);
        total += v["totals"]["discovered"].as_u64().unwrap();
        for f in v["failures"].as_array().unwrap() {
            failed.push((
                f["path"].as_str().unwrap().to_string(),
                f["error"].as_str().unwrap().to_string(),
            ));
            assert!(String::from_utf8_lossy(&o.stderr).contains("gone since plan"));
        }
    }
    assert_eq!(total, 6, "the plan's six files, no more");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].0.ends_with("f3.txt"), "{failed:?}");
    assert!(
        failed[0]
            .1
            .starts_with(&format!("gone since plan {id} was made (")),
        "{failed:?}"
    );
    assert!(!out.join("data/new.txt.gz").exists());
    assert!(out.join("data/f4.txt.gz").exists());
}

#[test]
fn a_plan_is_run_only_as_it_was_cut() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write(&src, "a.txt", b"a");
    let out = t.path().join("out");
    let id = plan(&src, &out, 3);
    let to = format!("dir:{}", out.display());
    let e = ferry()
        .args(["--plan", &id, "--shard", "0/4", "--to", &to])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&e.get_output().stderr).to_string();
    assert!(err.contains("has 3 shards"), "{err}");
    let e = ferry()
        .args([
            "--plan",
            "20200101T000000Z-0000",
            "--shard",
            "0/3",
            "--to",
            &to,
        ])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&e.get_output().stderr).to_string();
    assert!(err.contains(&format!("plans there: {id}")), "{err}");
    // A planned run needs the inputs the plan was made from (it walks none of them).
    let e = ferry()
        .args(["--plan", &id, "--shard", "0/3", "--to", &to])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&e.get_output().stderr).to_string();
    assert!(err.contains("needs the INPUTs"), "{err}");
}

/// A shard that never ran, and one that was stopped, show as unfinished; `--report`
/// takes a `{shard}` template.
#[test]
fn report_names_the_shards_that_have_not_finished() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    for i in 0..8 {
        write(&src, &format!("f{i}.txt"), &text(3_000, i));
    }
    let out = t.path().join("out");
    let to = format!("dir:{}", out.display());
    let per = t.path().join("r-{shard}.json");
    ferry()
        .arg(&src)
        .args(["--shard", "0/3", "--to", &to])
        .arg("--report")
        .arg(&per)
        .assert()
        .success();
    assert!(t.path().join("r-0-of-3.json").exists());
    // Shard 1 stopped by its deadline before it could finish.
    ferry()
        .arg(&src)
        .args(["--shard", "1/3", "--to", &to, "--timeout", "1ns"])
        .assert()
        .code(1);
    let r = sub("report").arg(&to).assert().code(1);
    let text = String::from_utf8_lossy(&r.get_output().stdout).to_string();
    assert!(text.contains("3 shards"), "{text}");
    assert!(
        text.contains("not finished: 2/3 (no report: never started)"),
        "{text}"
    );
    assert!(
        text.contains("not finished: 1/3 (cancelled since"),
        "{text}"
    );
    assert!(!text.contains("not finished: 0/3"), "{text}");
}

/// Issue 21 point 7: a line appended to a plan list at the sink, naming a file outside
/// the runner's inputs, is refused by name; nothing of it is delivered.
#[test]
fn a_plan_list_at_the_sink_cannot_make_a_runner_read_other_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    write(&src, "a.txt", b"a");
    let secret = write(t.path(), "secret/hostname", b"not yours");
    let out = t.path().join("out");
    let id = plan(&src, &out, 1);
    let list = out.join(format!(".ferry-plan.{id}.shard-0-of-1.jsonl"));
    let mut text = std::fs::read_to_string(&list).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let mut stolen = line.clone();
    stolen["path"] = secret.display().to_string().into();
    stolen["key"] = "data/stolen".into();
    text.push_str(&format!("{stolen}\n"));
    // A link under the input that leads out is refused too (checked after resolving).
    std::os::unix::fs::symlink(&secret, src.join("link")).unwrap();
    let mut linked = line;
    linked["path"] = src.join("link").display().to_string().into();
    linked["key"] = "data/link".into();
    text.push_str(&format!("{linked}\n"));
    std::fs::write(&list, text).unwrap();
    let r = planned_run(&src, &out, &id, "0/1").code(1);
    let err = String::from_utf8_lossy(&r.get_output().stderr).to_string();
    assert!(err.contains("not under the inputs"), "{err}");
    assert!(!out.join("data/stolen.gz").exists());
    assert!(!out.join("data/link.gz").exists());
    assert!(out.join("data/a.txt.gz").exists());
}
