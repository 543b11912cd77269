//! The `ferry` binary: parse flags, run the command, print, exit. Nothing else.

use clap::Parser;
use ferry::cli::{rewrite_level_shorthand, Cli, Command, RunArgs, VerifyArgs};
use ferry::pipeline::CancelToken;
use ferry::{ExitCode, FerryError};

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(rewrite_level_shorthand(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            }
            .into();
        }
    };
    let code = match cli.command {
        Some(Command::Verify(args)) => verify(args),
        None => deliver(cli.run),
    };
    code.unwrap_or_else(|e| {
        eprintln!("ferry: {e}");
        e.exit_code()
    })
    .into()
}

fn deliver(args: RunArgs) -> Result<ExitCode, FerryError> {
    let (quiet, report) = (args.verbosity.quiet, args.report.clone());
    let config = args.into_config()?;
    let cancel = CancelToken::new();
    ferry::interrupt::cancel_on_ctrl_c(&cancel);
    let summary = ferry::run(&config, cancel)?;
    if !quiet {
        eprint!("{}", summary.render_text());
    }
    let written = report.map_or(Ok(()), |r| summary.write_report(&r).map_err(|e| (r, e)));
    if let Err((target, e)) = &written {
        eprintln!(
            "ferry: cannot write the report to {}: {e}",
            target.display()
        );
    }
    Ok(summary
        .exit_code()
        .max(written.map_or(ExitCode::Failures, |_| ExitCode::Success)))
}

fn verify(args: VerifyArgs) -> Result<ExitCode, FerryError> {
    Ok(ferry::verify::verify(&args.to, args.shard)?.print(args.verbosity.level()))
}
