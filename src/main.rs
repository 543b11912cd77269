//! The `ferry` binary: parse flags, run the command through the harness, exit. Nothing
//! else.

use ferry::cli::{Cli, Command, RunArgs};
use ferry::commands::{self, deliver::Deliver};
use ferry::{ExitCode, FerryError};

fn main() -> std::process::ExitCode {
    let code = match ferry::cli::parse() {
        Err(code) => Ok(code),
        Ok(Cli { command, run }) => match command {
            None => deliver(run),
            Some(Command::Verify(a)) => {
                let (quiet, report) = (a.show.verbosity.quiet, a.show.report.clone());
                a.into_command()
                    .and_then(|c| commands::main(&c, quiet, report.as_deref()))
            }
            Some(Command::Restore(a)) => {
                let (quiet, report) = (a.show.verbosity.quiet, a.show.report.clone());
                a.into_command()
                    .and_then(|c| commands::main(&c, quiet, report.as_deref()))
            }
            Some(Command::Plan(a)) => {
                let (quiet, report) = (a.show.verbosity.quiet, a.show.report.clone());
                a.into_command()
                    .and_then(|c| commands::main(&c, quiet, report.as_deref()))
            }
            Some(Command::Watch(a)) => a.into_watch().and_then(|w| w.run()),
            Some(Command::Report(a)) => {
                let (quiet, report) = (a.show.verbosity.quiet, a.show.report.clone());
                a.into_command()
                    .and_then(|c| commands::main(&c, quiet, report.as_deref()))
            }
            Some(generated) => {
                let mut out = std::io::stdout().lock();
                match ferry::cli::write_generated(&generated, &mut out) {
                    // `ferry man | head` closes the pipe early: that is not an error.
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        Err(FerryError::setup(format!("cannot write: {e}")))
                    }
                    _ => Ok(ExitCode::Success),
                }
            }
        },
    };
    let code = code.unwrap_or_else(|e| {
        let text = ferry::words::redacted(&e.to_string()).into_owned();
        eprintln!("ferry: {}", ferry::words::escaped(&text));
        e.exit_code()
    });
    code.into()
}

/// `ferry INPUT… --to SINK`; `--report 'ferry-{shard}.json'` writes one file per shard.
fn deliver(args: RunArgs) -> Result<ExitCode, FerryError> {
    let (quiet, report) = (args.show.verbosity.quiet, args.show.report.clone());
    let report = report.map(|r| match args.shard {
        Some(s) => std::path::PathBuf::from(
            r.to_string_lossy()
                .replace("{shard}", &format!("{}-of-{}", s.index(), s.count())),
        ),
        None => r,
    });
    let config = args.into_config()?;
    commands::main(&Deliver(&config), quiet, report.as_deref())
}
