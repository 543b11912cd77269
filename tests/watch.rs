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
    let mut w = Running::spawn([
        "watch",
        src.to_str().unwrap(),
        "--to",
        &format!("dir:{}", out.display()),
        "--settle",
        "200ms",
        "-v",
    ]);
    let done = |file: &'static str| move |l: &str| l.starts_with("[done]") && l.contains(file);
    w.wait_until("a.log shipped by the scan", done("a.log"));
    w.wait_for("watch: watching 1 input");
    assert_eq!(gunzip(&out.join("app/a.log.gz")), b"first\n");

    write(&src, "b.log", b"new\n");
    w.wait_until("b.log shipped", done("b.log"));
    assert_eq!(gunzip(&out.join("app/b.log.gz")), b"new\n");

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

fn done_line(l: &str, file: &str) -> bool {
    l.starts_with("[done]") && l.contains(file)
}
