//! `ferry watch`: ships what changed while it was down, then each new or changed file
//! once it has settled, each generation once; SIGTERM lets it finish and exit 0.

mod common;

use common::*;

/// A file there at the start is shipped by the start-up scan; a new file, a file in a
/// new directory, and a file appended to are each shipped once they settle (the appended
/// one again, under the same key, with its new content); reads by ferry itself ship
/// nothing again; SIGTERM ends it with 0.
#[test]
fn new_and_changed_files_are_shipped_once_settled_and_sigterm_ends_it() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    write(&src, "a.log", b"first\n");
    let out = t.path().join("out");
    let mut w = watch(&src, &out, &["-v", "--metrics-addr", "127.0.0.1:0"]);
    let line = w.wait_until("the metrics address", |l| l.contains("watch: metrics at"));
    let addr = metrics_addr(&line);
    let done = |file: &'static str| move |l: &str| l.starts_with("[done]") && l.contains(file);
    w.wait_until("a.log shipped by the scan", done("a.log"));
    w.wait_for("watch: watching 1 input");
    assert_eq!(gunzip(&out.join("app/a.log.gz")), b"first\n");

    write(&src, "b.log", b"new\n");
    w.wait_until("b.log shipped", done("b.log"));
    assert_eq!(gunzip(&out.join("app/b.log.gz")), b"new\n");

    // One endpoint for the whole watch: the shipments' files added up, and the settling.
    w.wait_for("watch: 1 shipped");
    let page = scrape(&addr);
    assert!(
        page.contains("ferry_files_total{outcome=\"succeeded\"} 2"),
        "{page}"
    );
    assert!(page.contains("ferry_watch_files_settling"), "{page}");
    assert!(page.contains("ferry_watch_shipments 2"), "{page}");

    write(&src, "deep/er/c.log", b"in a new directory\n");
    w.wait_until("c.log shipped", done("c.log"));
    assert_eq!(
        gunzip(&out.join("app/deep/er/c.log.gz")),
        b"in a new directory\n"
    );

    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(src.join("a.log"))
            .unwrap();
        f.write_all(b"second\n").unwrap();
    }
    w.wait_until("a.log shipped again", done("a.log"));
    assert_eq!(gunzip(&out.join("app/a.log.gz")), b"first\nsecond\n");

    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{status:?}: {err}");
    let shipped = |f: &str| err.lines().filter(|l| done_line(l, f)).count();
    // Each generation once.
    assert_eq!(shipped("b.log"), 1, "{err}");
    assert_eq!(shipped("c.log"), 1, "{err}");
    assert_eq!(shipped("a.log"), 2, "{err}");
    verify_dir(&out).assert().success();
}

/// Writes `x.tmp` (which `--exclude '*.tmp'` leaves out) and then `y.log` under `src`:
/// the shipment that takes `y.log` takes it alone (the excluded file, written first,
/// would have settled by then).
fn only_the_wanted_one_goes(w: &mut Running, src: &std::path::Path) {
    write(src, "x.tmp", b"scratch\n");
    write(src, "y.log", b"wanted\n");
    w.wait_until("y.log shipped", |l| done_line(l, "y.log"));
    let line = w.wait_until("the shipment's line", |l| l.contains("shipped,"));
    assert!(line.contains("watch: 1 shipped"), "{line}");
}

/// What a shipment's line says it deleted (`…, 2 deleted`), or 0.
fn deletions(line: &str) -> u64 {
    (line.strip_suffix(" deleted"))
        .and_then(|l| l.rsplit(", ").next()?.parse().ok())
        .unwrap_or(0)
}

/// `ferry watch SRC --to dir:OUT --settle 200ms EXTRA…`.
fn watch(src: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Running {
    let mut args = vec![
        "watch".to_string(),
        src.display().to_string(),
        "--to".into(),
        format!("dir:{}", out.display()),
        "--settle".into(),
        "200ms".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Running::spawn(args)
}

fn done_line(l: &str, file: &str) -> bool {
    l.starts_with("[done]") && l.contains(file)
}

/// After `kill -9`, a restart ships what was created while it was down (the start-up
/// scan) and nothing that was already shipped.
#[test]
fn a_restart_after_kill_9_ships_what_came_meanwhile_and_nothing_twice() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    write(&src, "a.log", b"one\n");
    let out = t.path().join("out");
    let mut w = watch(&src, &out, &["-v"]);
    w.wait_for("watch: watching 1 input");
    write(&src, "b.log", b"two\n");
    w.wait_until("b.log shipped", |l| done_line(l, "b.log"));
    // The shipment's line comes once its history is saved (a file shipped in the last
    // second before a kill -9 may go again, as the journal saves every second).
    w.wait_for("watch: 1 shipped");
    w.signal(libc::SIGKILL);
    let _ = w.finish();
    write(&src, "c.log", b"made while it was down\n");

    let mut w = watch(&src, &out, &["-v"]);
    w.wait_for("watch: watching 1 input");
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    assert!(err.lines().any(|l| done_line(l, "c.log")), "{err}");
    assert!(
        !err.lines()
            .any(|l| done_line(l, "a.log") || done_line(l, "b.log")),
        "{err}"
    );
    assert!(err.contains("scan: 1 shipped, 2 unchanged"), "{err}");
    assert_eq!(
        gunzip(&out.join("app/c.log.gz")),
        b"made while it was down\n"
    );
    verify_dir(&out).assert().success();
}

/// What logrotate compressed itself (`app.log.1.gz`) goes as it is, under its own name,
/// not gzipped twice; a `data.gz` beside a `data` (whose object is `data.gz`) goes as an
/// archive object instead. Verify and restore take both.
#[test]
fn a_log_compressed_by_logrotate_goes_as_it_is() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"an old generation\n").unwrap();
    let rotated = gz.finish().unwrap();
    write(&src, "app.log.1.gz", &rotated);
    write(&src, "data", b"plain data\n");
    write(&src, "data.gz", &rotated);
    let out = t.path().join("out");
    let mut w = watch(&src, &out, &[]);
    w.wait_for("watch: watching 1 input");
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    assert_eq!(
        std::fs::read(out.join("app/app.log.1.gz")).unwrap(),
        rotated,
        "as it was"
    );
    assert!(
        !out.join("app/app.log.1.gz.gz").exists(),
        "not gzipped twice"
    );
    assert_eq!(gunzip(&out.join("app/data.gz")), b"plain data\n");
    assert_eq!(gunzip(&out.join("app/data.gz.gz")), rotated);
    verify_dir(&out).assert().success();
    restores_as(
        &out,
        &t.path().join("back"),
        &src,
        &["app.log.1.gz", "data", "data.gz"],
    );
}

/// `ferry restore --from dir:OUT BACK` gives back each of `files` of `src` (under `app/`)
/// byte for byte.
fn restores_as(
    out: &std::path::Path,
    back: &std::path::Path,
    src: &std::path::Path,
    files: &[&str],
) {
    assert_cmd::Command::cargo_bin("ferry")
        .unwrap()
        .args(["restore", "--progress", "never", "--from"])
        .arg(format!("dir:{}", out.display()))
        .arg(back)
        .assert()
        .success();
    for f in files {
        assert_eq!(
            std::fs::read(back.join("app").join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
}

/// A file renamed after it was shipped (`app.log` → `app.log.1`, as logrotate's `create`
/// mode does) is known by its device, inode, size and mtime: its object is copied to its
/// new key in the store, not read or sent again, and recorded under its new name; the new
/// `app.log` goes under the old key. Verify and restore take both.
#[test]
fn a_renamed_file_is_copied_in_the_store_not_sent_again() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    write(&src, "app.log", b"generation one\n");
    let out = t.path().join("out");
    let mut w = watch(&src, &out, &["-v"]);
    w.wait_until("app.log shipped by the scan", |l| done_line(l, "app.log"));
    w.wait_for("watch: watching 1 input");
    std::fs::rename(src.join("app.log"), src.join("app.log.1")).unwrap();
    write(&src, "app.log", b"generation two, longer\n");
    w.wait_until("app.log.1 renamed", |l| {
        l.starts_with("[renamed]") && l.contains("app.log.1")
    });
    w.wait_until("the new app.log shipped", |l| done_line(l, "app.log "));
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    assert!(
        !err.lines().any(|l| done_line(l, "app.log.1")),
        "app.log.1 was sent again: {err}"
    );
    assert_eq!(gunzip(&out.join("app/app.log.1.gz")), b"generation one\n");
    assert_eq!(
        gunzip(&out.join("app/app.log.gz")),
        b"generation two, longer\n"
    );
    verify_dir(&out).assert().success();
    restores_as(
        &out,
        &t.path().join("back"),
        &src,
        &["app.log", "app.log.1"],
    );
}

/// `ferry watch --delete`: a file removed, or a directory moved away, has its objects
/// removed once it stayed gone for `--settle`; a file that is gone for a moment (renamed
/// away and back, as a save by rename does) keeps its object; an object ferry did not
/// store is never touched.
#[test]
fn delete_while_watching_removes_what_stayed_gone() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    write(&src, "a.log", b"a\n");
    write(&src, "b.log", b"b\n");
    write(&src, "old/c.log", b"c\n");
    write(&src, "old/d.log", b"d\n");
    let out = t.path().join("out");
    write(&out, "app/mine.gz", b"someone else's");
    let mut w = watch(
        &src,
        &out,
        &["-v", "--delete", "--metrics-addr", "127.0.0.1:0"],
    );
    let line = w.wait_until("the metrics address", |l| l.contains("watch: metrics at"));
    let addr = metrics_addr(&line);
    w.wait_for("watch: watching 1 input");
    // A removal alone, with nothing else to ship, is mirrored.
    std::fs::remove_file(src.join("a.log")).unwrap();
    std::fs::rename(src.join("old"), t.path().join("moved-away")).unwrap();
    // Said by the [deleted] lines and by the shipments' lines (which count the
    // directory's entry too, which has no object).
    let deleted = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let said = std::cell::Cell::new(0);
    w.wait_until("a.log, c.log and d.log deleted", |l| {
        if let Some(rest) = l.strip_prefix("[deleted] ") {
            deleted.borrow_mut().insert(rest.to_string());
        }
        said.set(said.get() + deletions(l));
        deleted.borrow().len() == 3 && said.get() == 4
    });
    // And counted at the metrics endpoint.
    let page = scrape(&addr);
    assert!(page.contains("ferry_deleted_total 4"), "{page}");
    // b.log away and back within the settle time: shipped again (its ctime moved), not
    // deleted.
    std::fs::rename(src.join("b.log"), t.path().join("b.tmp")).unwrap();
    std::fs::rename(t.path().join("b.tmp"), src.join("b.log")).unwrap();
    w.wait_until("b.log shipped again", |l| done_line(l, "b.log"));
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    let deleted = deleted.into_inner();
    assert_eq!(
        deleted,
        ["app/a.log.gz", "app/old/c.log.gz", "app/old/d.log.gz"]
            .into_iter()
            .map(String::from)
            .collect(),
        "{err}"
    );
    assert!(!out.join("app/a.log.gz").exists());
    assert!(!out.join("app/old/c.log.gz").exists());
    assert_eq!(gunzip(&out.join("app/b.log.gz")), b"b\n");
    assert_eq!(
        std::fs::read(out.join("app/mine.gz")).unwrap(),
        b"someone else's"
    );
    assert_eq!(err.lines().map(deletions).sum::<u64>(), 4, "{err}");
    assert!(!err.contains("[deleted] app/b.log"), "{err}");
    verify_dir(&out).assert().success();
}

/// The selection flags hold for files found by events as for the start-up scan: an
/// excluded file, or one in an excluded directory, is never shipped.
#[test]
fn excluded_files_are_not_shipped_when_they_settle() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("app");
    write(&src, "keep.log", b"kept\n");
    let out = t.path().join("out");
    let mut w = watch(
        &src,
        &out,
        &["-v", "--exclude", "*.tmp", "--exclude", "cache/"],
    );
    w.wait_for("watch: watching 1 input");
    write(&src, "cache/c.log", b"cached\n");
    only_the_wanted_one_goes(&mut w, &src);
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    assert!(!err.contains("x.tmp") && !err.contains("c.log"), "{err}");
    assert!(!out.join("app/x.tmp.gz").exists());
    assert!(!out.join("app/cache").exists());
}

/// `ferry watch --files-from LIST` watches the files the list names (keyed as a run keys
/// them), each through its directory; SIGHUP reads the list and the `--exclude-from`
/// globs again: a file added to the list is shipped, a file newly excluded is not.
#[test]
fn sighup_reads_the_file_list_and_the_filters_again() {
    let t = tempfile::tempdir().unwrap();
    let logs = t.path().join("logs");
    write(&logs, "a.log", b"a\n");
    write(&logs, "b.log", b"b\n");
    let list = t.path().join("list");
    std::fs::write(&list, format!("{}\n", logs.join("a.log").display())).unwrap();
    let src = t.path().join("app");
    write(&src, "keep.log", b"keep\n");
    let excludes = t.path().join("excludes");
    std::fs::write(&excludes, "# nothing yet\n").unwrap();
    let out = t.path().join("out");
    let mut w = watch(
        &src,
        &out,
        &[
            "-v",
            "--files-from",
            list.to_str().unwrap(),
            "--exclude-from",
            excludes.to_str().unwrap(),
        ],
    );
    w.wait_for("watch: watching 1 input and 1 listed file");
    let key = |f: &str| logs.join(f).strip_prefix("/").unwrap().to_path_buf();
    assert_eq!(
        gunzip(&out.join(key("a.log")).with_extension("log.gz")),
        b"a\n"
    );
    // A listed file is watched: written again, it goes again.
    write(&logs, "a.log", b"a, again\n");
    w.wait_until("a.log shipped again", |l| done_line(l, "a.log"));
    // The list gains b.log, and *.tmp is excluded: SIGHUP.
    std::fs::write(
        &list,
        format!(
            "{}\n{}\n",
            logs.join("a.log").display(),
            logs.join("b.log").display()
        ),
    )
    .unwrap();
    std::fs::write(&excludes, "*.tmp\n").unwrap();
    w.signal(libc::SIGHUP);
    w.wait_for(
        "watch: SIGHUP: the file list and filters read again; watching 1 input and 2 listed files",
    );
    w.wait_until("b.log shipped by the rescan", |l| done_line(l, "b.log"));
    only_the_wanted_one_goes(&mut w, &src);
    w.signal(libc::SIGTERM);
    let (status, err, _) = w.finish();
    assert!(status.success(), "{err}");
    assert!(!err.contains("x.tmp"), "{err}");
    assert_eq!(
        gunzip(&out.join(key("a.log")).with_extension("log.gz")),
        b"a, again\n"
    );
    assert_eq!(
        gunzip(&out.join(key("b.log")).with_extension("log.gz")),
        b"b\n"
    );
    verify_dir(&out).assert().success();
}
