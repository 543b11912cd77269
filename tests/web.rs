//! `--web`: files stored as a web server sends them, into `dir:` in the precompressed
//! layout nginx `gzip_static` and Caddy's `precompressed` serve, then verified and
//! restored, mixed with archive objects in one sink.

mod common;

use common::*;
use std::path::Path;

/// The manifest's entries by key, as JSON.
fn entries(out: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(out.join(".ferry-manifest.json"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["dir"] != true)
        .map(|e| (e["key"].as_str().unwrap().to_string(), e))
        .collect()
}

fn restore(out: &Path, dest: &Path) -> serde_json::Value {
    let r = assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .arg("restore")
        .arg("--from")
        .arg(format!("dir:{}", out.display()))
        .arg(dest)
        .args(["--progress", "never", "--report", "-"])
        .assert()
        .success();
    report(&r.get_output().stdout)
}

/// Into `dir:`, a text file (a `--web-ext`) goes as itself with its gzip bytes beside it
/// (`x.html` and `x.html.gz`, decoding to the same), and the rest goes unchanged with no
/// `.gz`: big ones (several segments) too. The manifest records each form; verify and
/// restore take both; a rerun skips everything; and a rerun without `--web` stores each
/// file again as an archive `.gz`, which also verifies and restores.
#[test]
fn web_files_go_as_a_server_sends_them_and_come_back() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("site");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("index.html", text(20_000, 1)),
        ("css/style.CSS", text(3_000, 2)),
        ("js/app.js", text(3 << 20, 3)),
        ("img/logo.png", noise(5_000)),
        ("media/clip.bin", noise(3 << 20)),
        ("empty.txt", Vec::new()),
    ];
    for (rel, bytes) in &files {
        write(&src, rel, bytes);
    }
    // A precompressed copy the site already had: into dir:, ferry writes index.html.gz
    // itself, so this one is skipped, by name, not written over it.
    let stale = b"\x1f\x8b an older copy".to_vec();
    write(&src, "index.html.gz", &stale);
    let out = t.path().join("out");
    let r = ferry()
        .arg(&src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .args([
            "--web",
            "--web-ext",
            "html,css,js,txt",
            "--segment-size",
            "1MiB",
        ])
        .args(["-v", "--report", "-"])
        .assert()
        .success()
        .stderr(predicates::str::contains("index.html.gz"));
    let first = report(&r.get_output().stdout);
    assert_eq!(first["totals"]["succeeded"], 6);
    assert_eq!(first["totals"]["skipped"], 1);
    for (rel, bytes) in &files {
        let plain = out.join("site").join(rel);
        assert_eq!(&std::fs::read(&plain).unwrap(), bytes, "{rel} as it was");
        let gz = out.join("site").join(format!("{rel}.gz"));
        let gzipped = !rel.ends_with(".png") && !rel.ends_with(".bin");
        assert_eq!(gz.exists(), gzipped, "{rel}.gz");
        if gzipped {
            assert_eq!(&gunzip(&gz), bytes, "{rel}.gz decodes to it");
        }
    }
    let e = entries(&out);
    assert_eq!(e["site/index.html"]["form"], "gzip");
    assert_eq!(e["site/css/style.CSS"]["form"], "gzip");
    assert_eq!(e["site/img/logo.png"]["form"], "plain");
    assert_eq!(e["site/media/clip.bin"]["form"], "plain");
    assert!(e["site/media/clip.bin"]["segments"].is_null());

    verify_dir(&out).assert().success();
    let back = t.path().join("back");
    assert_eq!(restore(&out, &back)["totals"]["succeeded"], 6);
    for (rel, bytes) in &files {
        assert_eq!(
            &std::fs::read(back.join("site").join(rel)).unwrap(),
            bytes,
            "{rel}"
        );
    }

    // A rerun skips every file, from one listing.
    let again = deliver_web(&src, &out, &["--web", "--web-ext", "html,css,js,txt"]);
    assert_eq!(again["totals"]["skipped"], 7);

    // A damaged plain object is named by verify.
    let logo = out.join("site/img/logo.png");
    let mut bytes = std::fs::read(&logo).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&logo, &bytes).unwrap();
    verify_dir(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("logo.png"));

    // Without --web, every file is stored again, as an archive object.
    let archive = deliver_web(&src, &out, &[]);
    assert_eq!(archive["totals"]["succeeded"], 7);
    let e = entries(&out);
    assert!(e.values().all(|e| e["form"].is_null()), "{e:?}");
    assert_eq!(
        gunzip(&out.join("site/img/logo.png.gz")),
        noise(5_000),
        "now an archive object"
    );
    verify_dir(&out).assert().success();
    let back2 = t.path().join("back2");
    assert_eq!(restore(&out, &back2)["totals"]["succeeded"], 7);
    assert_eq!(
        std::fs::read(back2.join("site/index.html.gz")).unwrap(),
        stale
    );
    for (rel, bytes) in &files {
        assert_eq!(
            &std::fs::read(back2.join("site").join(rel)).unwrap(),
            bytes,
            "{rel}"
        );
    }
}

fn deliver_web(src: &Path, out: &Path, flags: &[&str]) -> serde_json::Value {
    let r = ferry()
        .arg(src)
        .arg("--to")
        .arg(format!("dir:{}", out.display()))
        .args(flags)
        .args(["--report", "-"])
        .assert()
        .success();
    report(&r.get_output().stdout)
}

/// `--web-ext` without `--web` is a usage error that names it.
#[test]
fn web_flags_without_web_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    ferry()
        .arg(t.path())
        .args(["--to", "sim:", "--web-ext", "html"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--web"));
}
