//! Scale-out on a real scheduler: the README's own sbatch script, submitted as a 4-task
//! job array to the single-node Slurm cluster `.ci/run` starts (`scripts/slurm-up`), one
//! task killed with SIGKILL mid-run and resubmitted; the union is every file exactly once,
//! no temp files, every shard finished and verified. The Kubernetes example is kept in
//! step with the same command line.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Prints a line of the test's story and keeps it in `target/tmp/slurm-test.log`, which
/// `.ci/run` shows (cargo hides a passing test's output).
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        eprintln!("{line}");
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-test.log"))
        {
            let _ = writeln!(f, "{line}");
        }
    }};
}

const SCRIPT: &str = "examples/slurm/ferry-array.sbatch";
const K8S: &str = "examples/k8s/ferry-indexed-job.yaml";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Whether a Slurm partition answers here. In CI (FERRY_TEST_REQUIRE_ALL=1) its absence
/// fails the test; elsewhere the test says why it skips.
fn slurm_up() -> bool {
    let ok = Command::new("sinfo")
        .args(["-h", "-o", "%a"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("up"));
    if !ok {
        let why = "Slurm is not running here (no partition answers `sinfo`); start it with \
                   scripts/slurm-up";
        assert!(
            std::env::var_os("FERRY_TEST_REQUIRE_ALL").is_none(),
            "{why} — CI must run this test"
        );
        eprintln!("skipping: {why}");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The fenced block in the README that follows `marker`.
fn readme_block_after(marker: &str) -> String {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no {marker:?}"));
    let rest = &readme[at..];
    let start = rest.find("```").unwrap();
    let body = &rest[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// The line that runs ferry in a script.
fn ferry_line(script: &str) -> String {
    script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("exec ferry "))
        .unwrap_or_else(|| panic!("no `exec ferry` line in {script}"))
        .to_string()
}

#[test]
fn the_readme_shows_the_tested_script_and_kubernetes_runs_the_same_command() {
    let script = std::fs::read_to_string(repo(SCRIPT)).unwrap();
    assert_eq!(
        readme_block_after("<!-- examples/slurm/ferry-array.sbatch -->"),
        script,
        "the README's sbatch script is {SCRIPT}, verbatim"
    );
    let yaml = std::fs::read_to_string(repo(K8S)).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).expect("the Job is YAML");
    let job = &docs[0];
    assert_eq!(job["kind"].as_str(), Some("Job"));
    assert_eq!(job["spec"]["completionMode"].as_str(), Some("Indexed"));
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let shell = container["command"][2].as_str().expect("sh -c SCRIPT");
    assert_eq!(ferry_line(shell), ferry_line(&script));
    assert!(shell.contains("K=$JOB_COMPLETION_INDEX"), "{shell}");
    let env: Vec<&str> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for var in ["FERRY_TO", "FERRY_PLAN", "FERRY_SHARDS", "FERRY_INPUT"] {
        assert!(
            env.contains(&var),
            "{var} missing from the Job's env: {env:?}"
        );
    }
    assert_eq!(
        job["spec"]["completions"].as_i64(),
        container["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some("FERRY_SHARDS"))
            .and_then(|e| e["value"].as_str())
            .and_then(|v| v.parse().ok()),
        "completions = FERRY_SHARDS"
    );
}

/// The object keys of plan list `k` (relative to the sink, with `.gz`).
fn list_objects(out: &Path, plan: &str, k: u32, n: u32) -> Vec<PathBuf> {
    let list = out.join(format!(".ferry-plan.{plan}.shard-{k}-of-{n}.jsonl"));
    std::fs::read_to_string(list)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            PathBuf::from(format!("{}.gz", v["key"].as_str().unwrap()))
        })
        .collect()
}

/// Waits for `done` to hold, checking every 20 ms; panics with `what` after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_job_array_with_a_task_killed_mid_run_and_resubmitted_delivers_every_file_once() {
    if !slurm_up() {
        return;
    }
    let _ = std::fs::remove_file(Path::new(env!("CARGO_TARGET_TMPDIR")).join("slurm-test.log"));
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("data");
    // Enough work that a task is still running when its first objects appear.
    for i in 0..8_000u64 {
        write(
            &src,
            &format!("d{}/e{}/f{i:05}.log", i % 10, i % 7),
            &text(2_000 + (i as usize * 37) % 6_000, i),
        );
    }
    for i in 0..8u64 {
        write(&src, &format!("big/b{i}.log"), &text(6 << 20, 100 + i));
    }
    let out = t.path().join("out");
    let sink = format!("dir:{}", out.display());
    let ferry_bin = PathBuf::from(env!("CARGO_BIN_EXE_ferry"));
    let path = format!(
        "{}:{}",
        ferry_bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let plan = run(Command::new(&ferry_bin)
        .args(["plan", "--shards", "4", "-q", "--to", &sink])
        .arg(&src));
    let src_text = src.display().to_string();
    let envs = [
        ("PATH", path.as_str()),
        ("FERRY_TO", sink.as_str()),
        ("FERRY_PLAN", plan.as_str()),
        ("FERRY_SHARDS", "4"),
        ("FERRY_INPUT", src_text.as_str()),
    ];
    let sbatch = |array: &str, extra: &[&str]| {
        let mut c = Command::new("sbatch");
        c.current_dir(t.path())
            .args(["--parsable", "--array", array])
            .args(extra)
            .arg(repo(SCRIPT))
            .envs(envs);
        c
    };
    let job = run(&mut sbatch("0-3", &[]));
    let job = job.split(';').next().unwrap().to_string();
    say!("slurm: plan {plan}, job array {job}");

    // Task 0 has delivered some of its list: kill it there.
    let mine = list_objects(&out, &plan, 0, 4);
    wait_for("task 0's first objects", Duration::from_secs(120), || {
        mine.iter().filter(|k| out.join(k).exists()).count() >= 20
    });
    run(Command::new("scancel").args(["--signal=KILL", "--full", &format!("{job}_0")]));
    let before = mine.iter().filter(|k| out.join(k).exists()).count();
    say!(
        "slurm: killed task {job}_0 with SIGKILL after {before} of its {} files",
        mine.len()
    );
    assert!(
        before < mine.len(),
        "task 0 finished before it was killed; give it more work"
    );
    let killed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(".ferry-report.shard-0-of-4.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(killed["run"]["status"], "running", "{killed}");

    // Resubmit index 0 once the array is over, and wait for it.
    let dep = format!("--dependency=afterany:{job}");
    let again = run(&mut sbatch("0", &["--wait", &dep]));
    say!("slurm: resubmitted task 0 as {again}");
    // No accounting database here: slurmctld still holds the finished tasks.
    let states = run(Command::new("scontrol").args(["-o", "show", "job", &job]));
    for task in states.lines() {
        let field = |name: &str| {
            task.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or("?")
                .to_string()
        };
        say!(
            "slurm: task {}_{}: {} (exit {})",
            job,
            field("ArrayTaskId="),
            field("JobState="),
            field("ExitCode=")
        );
    }

    // The union is exactly the tree: one object per file, each decoding to its source.
    let objects = sink_objects(&out);
    let sources = files_under(&src);
    assert_eq!(objects.len(), sources.len(), "one object per file");
    for rel in &sources {
        let obj = out.join("data").join(format!("{}.gz", rel.display()));
        assert_eq!(
            gunzip(&obj),
            std::fs::read(src.join(rel)).unwrap(),
            "{rel:?}"
        );
    }
    let temps: Vec<PathBuf> = files_under(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".ferry-tmp"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");

    // Every shard finished, and one verify checks them all.
    let r = Command::new(&ferry_bin)
        .args(["report", "--json", &sink])
        .output()
        .unwrap();
    let combined: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(r.status.success(), "{combined}");
    assert_eq!(
        combined["unfinished"].as_array().unwrap().len(),
        0,
        "{combined}"
    );
    let n = sources.len() as u64;
    let totals = &combined["totals"];
    assert_eq!(totals["discovered"].as_u64(), Some(n), "{combined}");
    assert_eq!(totals["failed"].as_u64(), Some(0), "{combined}");
    // The rerun skipped what the killed task had journaled and redid the rest.
    let rerun = &combined["shards"][0]["totals"];
    assert_eq!(
        rerun["succeeded"].as_u64().unwrap() + rerun["skipped"].as_u64().unwrap(),
        mine.len() as u64,
        "{rerun}"
    );
    say!(
        "slurm: report: {} files, {} succeeded + {} skipped across 4 shards; the rerun of \
         task 0 skipped {} its first run had journaled",
        n,
        totals["succeeded"],
        totals["skipped"],
        rerun["skipped"]
    );
    let v = Command::new(&ferry_bin)
        .args([
            "verify",
            "--progress",
            "never",
            "--report",
            "-",
            "--to",
            &sink,
        ])
        .output()
        .unwrap();
    let found: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert!(v.status.success(), "{found}");
    assert_eq!(found["checked"].as_u64(), Some(n), "{found}");
    say!("slurm: verify: {} objects checked, all shards, 0 bad", n);
}
