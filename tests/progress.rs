//! The live view in a real pseudo-terminal (util-linux `script`), as a user sees it: the
//! main bar of one big file reaches 100 %, lines fit the terminal, and colour follows
//! `NO_COLOR` and `--color`.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Runs `ferry ARGS` in a pseudo-terminal of `cols` columns with `env`, and returns what
/// it drew (escape sequences and all).
fn in_a_terminal(dir: &Path, cols: u16, env: &[(&str, &str)], args: &str) -> String {
    let ferry = env!("CARGO_BIN_EXE_ferry");
    let o = Command::new("script")
        .current_dir(dir)
        .args(["-q", "-e", "-c"])
        .arg(format!("stty cols {cols} rows 30; exec {ferry} {args}"))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .output()
        .expect("util-linux `script` runs a pseudo-terminal");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The screen text without escape sequences, one drawn line per element.
fn lines(raw: &str) -> Vec<String> {
    let plain = console::strip_ansi_codes(raw).replace('\r', "\n");
    plain.lines().map(str::to_string).collect()
}

#[test]
fn one_big_file_fills_the_bar_counting_bytes() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "big.log", &text(24 << 20, 7));
    let raw = in_a_terminal(t.path(), 100, &[], "big.log --to dir:out");
    let drawn = lines(&raw);
    let bars: Vec<&String> = drawn.iter().filter(|l| l.contains("ferry [")).collect();
    assert!(!bars.is_empty(), "no bar drawn: {raw:?}");
    assert!(
        bars.iter()
            .any(|l| l.contains("100%") && l.contains("1/1 files")),
        "the bar never reached 100 %: {bars:?}"
    );
    assert!(
        bars.iter().any(|l| l.contains("24 MiB/24 MiB")),
        "the bar counts bytes: {bars:?}"
    );
    // The summary still prints after the bars are cleared.
    assert!(raw.contains("1 succeeded"), "{raw:?}");
    assert_eq!(gunzip(&t.path().join("out/big.log.gz")), text(24 << 20, 7));
}

#[test]
fn colour_marks_failures_unless_no_color_is_set() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "a.log", &text(4 << 20, 1));
    write(t.path(), "list", b"a.log\nmissing.log\n");
    let args = "--files-from list --to dir:out";
    let sgr = |s: &str| s.contains("\u{1b}[31m") || s.contains("\u{1b}[1m");
    let coloured = in_a_terminal(t.path(), 100, &[], args);
    assert!(coloured.contains("1 failed"), "{coloured:?}");
    assert!(
        sgr(&coloured),
        "no colour by default on a terminal: {coloured:?}"
    );
    let plain = in_a_terminal(
        t.path(),
        100,
        &[("NO_COLOR", "1")],
        &format!("{args} --force"),
    );
    assert!(plain.contains("1 failed"), "{plain:?}");
    assert!(!sgr(&plain), "NO_COLOR still coloured: {plain:?}");
    let never = in_a_terminal(t.path(), 100, &[], &format!("{args} --force --color never"));
    assert!(!sgr(&never), "--color never still coloured: {never:?}");
}
