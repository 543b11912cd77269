//! The `ferry` binary: parse flags, run the command, print, exit. Nothing else.

use ferry::cli::{Cli, Command, RestoreArgs, RunArgs, VerifyArgs};
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
        eprintln!("ferry: {e}");
        e.exit_code()
    });
    code.into()
}

/// `ferry INPUT… --to SINK`: run, print the summary, write the report.
fn deliver(args: RunArgs) -> Result<ExitCode, FerryError> {
    let (quiet, report) = (args.verbosity.quiet, args.report.clone());
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

/// `ferry verify --to SINK`.
fn verify(args: VerifyArgs) -> Result<ExitCode, FerryError> {
    let opts = ferry::verify::VerifyOptions {
        progress: args.progress.into(),
        log_level: args.verbosity.level(),
        ..Default::default()
    };
    let spec = args.store.apply(args.to, None)?;
    let found = ferry::verify::verify(&spec, args.shard, opts)?;
    let code = found.print(args.verbosity.level());
    let reported = args.report.map_or(ExitCode::Success, |r| {
        ferry::report::write_json(&r, &found.to_json())
    });
    Ok(code.max(reported))
}
