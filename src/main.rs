//! The `ferry` binary: parse flags, build the config, run, print, exit. Nothing else.

use anyhow::Context;
use clap::Parser;
use ferry::cli::{rewrite_level_shorthand, Cli, VerifyCli};
use ferry::pipeline::{CancelReason, CancelToken};
use ferry::{Config, ExitCode};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    if std::env::args_os().nth(1).is_some_and(|a| a == "verify") {
        return verify_main();
    }
    let cli = match parse::<Cli>(rewrite_level_shorthand(std::env::args_os())) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let quiet = cli.quiet;
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry: {e}");
            return e.exit_code().code();
        }
    };
    let cancel = CancelToken::new();
    let presses = Arc::new(AtomicUsize::new(0));
    let token = cancel.clone();
    let handler = ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            token.cancel(CancelReason::Interrupted);
            eprintln!("ferry: interrupted; finishing up (press Ctrl-C again to quit now)");
        } else {
            std::process::exit(ExitCode::Interrupted.code());
        }
    });
    if let Err(e) = handler {
        eprintln!("ferry: warning: cannot handle Ctrl-C ({e})");
    }
    let summary = match ferry::run(&config, cancel) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry: {e}");
            return e.exit_code().code();
        }
    };
    if !quiet {
        eprint!("{}", summary.render_text());
    }
    let mut code = summary.exit_code();
    if let Some(target) = &config.report {
        if let Err(e) = write_report(target, &summary.to_json()) {
            eprintln!("ferry: {e:#}");
            code = code.max(ExitCode::Failures);
        }
    }
    code.code()
}

/// Parses flags; on failure prints clap's message and gives the exit code (2 for a usage
/// error, 0 for `--help` / `--version`).
fn parse<P: Parser>(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<P, i32> {
    P::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::Usage.code()
        } else {
            0
        }
    })
}

fn write_report(target: &std::path::Path, json: &str) -> anyhow::Result<()> {
    if target.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{json}").and_then(|_| out.flush()) {
            // A closed pipe (`ferry … --report - | head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.context("cannot write the report to stdout"),
        }
    } else {
        std::fs::write(target, format!("{json}\n"))
            .with_context(|| format!("cannot write the report to {}", target.display()))
    }
}

/// `ferry verify --to SINK`: exit 0 when every object checks out, 1 listing those that do
/// not, 2 when there is nothing to check against.
fn verify_main() -> i32 {
    let cli = match parse::<VerifyCli>(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let setup = || -> Result<_, ferry::FerryError> {
        let spec = ferry::sink::SinkSpec::parse(&cli.to)
            .map_err(|e| ferry::FerryError::Usage(format!("--to: {e}")))?;
        let shard = cli
            .shard
            .as_deref()
            .map(ferry::config::parse_shard)
            .transpose()?;
        ferry::verify::verify(&spec, shard)
    };
    match setup() {
        Ok(report) => {
            for m in &report.mismatches {
                eprintln!("ferry: verify: {}: {}", m.key.display(), m.problem);
            }
            let bad = report.mismatches.len();
            eprintln!(
                "ferry: verified {} objects: {} ok, {bad} bad",
                report.checked,
                report.checked - bad
            );
            if bad == 0 {
                0
            } else {
                ExitCode::Failures.code()
            }
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            e.exit_code().code()
        }
    }
}
