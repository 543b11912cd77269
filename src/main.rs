//! The `ferry` binary: parse flags, run the command, print, exit. Nothing else.

use ferry::cli::{Cli, Command, PlanArgs, ReportArgs, RestoreArgs, RunArgs, VerifyArgs};
use ferry::pipeline::CancelToken;
use ferry::{ExitCode, FerryError};

fn main() -> std::process::ExitCode {
    let code = match ferry::cli::parse() {
        Err(code) => Ok(code),
        Ok(Cli {
            command: Some(Command::Verify(args)),
            ..
        }) => verify(args),
        Ok(Cli {
            command: Some(Command::Restore(args)),
            ..
        }) => restore(args),
        Ok(Cli {
            command: Some(Command::Plan(args)),
            ..
        }) => plan(args),
        Ok(Cli {
            command: Some(Command::Report(args)),
            ..
        }) => report(args),
        Ok(Cli {
            command: Some(generated),
            ..
        }) => {
            let mut out = std::io::stdout().lock();
            match ferry::cli::write_generated(&generated, &mut out) {
                // `ferry man | head` closes the pipe early: that is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(FerryError::Usage(format!("cannot write: {e}")))
                }
                _ => Ok(ExitCode::Success),
            }
        }
        Ok(cli) => deliver(cli.run),
    };
    let code = code.unwrap_or_else(|e| {
        let text = ferry::words::redacted(&e.to_string()).into_owned();
        eprintln!("ferry: {}", ferry::words::escaped(&text));
        e.exit_code()
    });
    code.into()
}

/// `ferry INPUT… --to SINK`: run, print the summary, write the report.
fn deliver(args: RunArgs) -> Result<ExitCode, FerryError> {
    let (quiet, report) = (args.verbosity.quiet, args.report.clone());
    // `--report 'ferry-{shard}.json'`: one file per shard.
    let report = report.map(|r| match args.shard {
        Some(s) => std::path::PathBuf::from(
            r.to_string_lossy()
                .replace("{shard}", &format!("{}-of-{}", s.index(), s.count())),
        ),
        None => r,
    });
    let config = args.into_config()?;
    let cancel = CancelToken::new();
    ferry::interrupt::cancel_on_ctrl_c(&cancel);
    ferry::interrupt::ignore_file_size_signal();
    let summary = ferry::run(&config, cancel)?;
    if !quiet {
        eprint!("{}", summary.render_text());
    }
    let reported = report.map_or(ExitCode::Success, |r| summary.report_to(&r));
    Ok(summary.exit_code().max(reported))
}

/// `ferry restore --from SINK DEST`: restore, print the summary, write the report.
fn restore(args: RestoreArgs) -> Result<ExitCode, FerryError> {
    let (quiet, report) = (args.verbosity.quiet, args.report.clone());
    let opts = args.into_options()?;
    let cancel = CancelToken::new();
    ferry::interrupt::cancel_on_ctrl_c(&cancel);
    ferry::interrupt::ignore_file_size_signal();
    let summary = ferry::restore::restore(&opts, cancel)?;
    if !quiet {
        eprint!("{}", summary.render_text());
    }
    let reported = report.map_or(ExitCode::Success, |r| summary.report_to(&r));
    Ok(summary.exit_code().max(reported))
}

/// `ferry plan INPUT… --shards N --to SINK`: the plan id on stdout, how the lists came
/// out on stderr.
fn plan(args: PlanArgs) -> Result<ExitCode, FerryError> {
    let quiet = args.verbosity.quiet;
    let opts = args.into_options()?;
    let cancel = CancelToken::new();
    ferry::interrupt::cancel_on_ctrl_c(&cancel);
    let header = ferry::shard::plan::make_plan(&opts, cancel)?;
    if !quiet {
        eprint!("{}", ferry::shard::plan::describe(&header));
    }
    println!("{}", header.id);
    Ok(match header.unreadable {
        0 => ExitCode::Success,
        _ => ExitCode::Failures,
    })
}

/// `ferry report SINK`: every shard's report at the sink, added up.
fn report(args: ReportArgs) -> Result<ExitCode, FerryError> {
    let spec = args.store.apply(args.sink, None)?;
    let sink = ferry::sink::open(
        &spec,
        &ferry::sink::SinkOptions {
            read_only: true,
            ..Default::default()
        },
    )?;
    let combined = ferry::shard::report::Combined::read(sink.as_ref())?;
    match args.json {
        true => println!("{}", combined.to_json()),
        // Names in it (shards' keys, failures) shown with control characters escaped.
        false => combined
            .render_text()
            .lines()
            .for_each(|l| println!("{}", ferry::words::escaped(l))),
    }
    Ok(combined.exit_code())
}

/// `ferry verify --to SINK`.
fn verify(args: VerifyArgs) -> Result<ExitCode, FerryError> {
    let opts = ferry::verify::VerifyOptions {
        progress: args.progress.into(),
        log_level: args.verbosity.level(),
        ..Default::default()
    };
    let spec = args.store.apply(args.to, None)?;
    let cancel = CancelToken::new();
    ferry::interrupt::cancel_on_ctrl_c(&cancel);
    let found = ferry::verify::verify(&spec, args.shard, opts, cancel)?;
    let code = found.print(args.verbosity.level());
    let reported = args.report.map_or(ExitCode::Success, |r| {
        ferry::report::write_json(&r, &found.to_json())
    });
    Ok(code.max(reported))
}
