//! The command line as the user types it: flags, defaults and help text (clap derive).
//! It only parses; [`crate::config::Config::from_cli`] validates and builds the real values.

use clap::{ArgAction, Parser, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// Compress every file under the inputs with gzip and deliver it to a sink, in parallel,
/// within a memory budget, with progress and a summary.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// Files or directories to ferry. Keys keep each input's own name, like tar:
    /// `ferry ./logs` delivers `logs/a/b.log` as `logs/a/b.log.gz`.
    #[arg(value_name = "INPUT", required_unless_present = "files_from")]
    pub inputs: Vec<PathBuf>,

    /// Where to deliver: `dir:PATH` (a local directory).
    #[arg(long, value_name = "SINK", default_value = "dir:ferry-out")]
    pub to: String,

    /// Gzip level, 0 (store) to 9 (smallest); `-1` … `-9` work too.
    #[arg(short, long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,

    /// Compress workers [default: available cores].
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Load (file read) workers.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub load_workers: usize,

    /// Upload (sink write) workers.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub upload_workers: usize,

    /// Capacity of each channel between stages, in items.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,

    /// Large files are cut into segments of this size, compressed in parallel.
    #[arg(long, value_name = "SIZE", default_value = "1MiB")]
    pub segment_size: String,

    /// Most bytes in flight between reading and delivery
    /// [default: the larger of 16MiB and 4 × jobs × segment size].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// Also read paths from FILE (`-` for stdin), one per line.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,

    /// Paths in --files-from are separated by NUL (as `find -print0` writes).
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Follow symbolic links (loops are detected and skipped).
    #[arg(short = 'L', long)]
    pub follow: bool,

    /// Leave out paths matching GLOB (gitignore syntax, relative to each input).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Only take files matching GLOB (gitignore syntax); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Rewrite every file, even those unchanged since the last run.
    #[arg(long)]
    pub force: bool,

    /// fsync each output before it becomes visible (durable on power loss; slower).
    #[arg(long)]
    pub fsync: bool,

    /// Progress bars on stderr.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,

    /// More output: -v one line per file, -vv engine events.
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print errors only.
    #[arg(short, long)]
    pub quiet: bool,

    /// Write the summary as JSON to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Stop the whole run after this long (e.g. `90s`, `5m`); the rest is cancelled.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Fail a file that is not delivered within this long of being opened; the run goes on.
    #[arg(long, value_name = "DURATION")]
    pub task_timeout: Option<String>,

    /// Retries of a transient sink failure, per operation.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// First retry delay; it doubles on each retry, with jitter.
    #[arg(long, value_name = "DURATION", default_value = "200ms")]
    pub retry_backoff: String,

    /// Take only the files whose key hashes to shard K of N (0 ≤ K < N); N processes with
    /// K = 0…N-1 deliver every file exactly once.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
}

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Bars when stderr is a terminal.
    Auto,
    /// Bars on a terminal, plain progress lines elsewhere.
    Always,
    /// No bars.
    Never,
}

/// Rewrites gzip-style `-1` … `-9` (not `-0`, which is `--null`) into `--level=N` before clap sees them (clap would take
/// them for negative numbers or unknown flags). Stops at `--`.
pub fn rewrite_level_shorthand(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut done = false;
    for a in args {
        if !done {
            if a == "--" {
                done = true;
            } else if let Some(s) = a.to_str() {
                let b = s.as_bytes();
                // `-0` is --null (as in xargs), not a level: gzip has no -0 either.
                if b.len() == 2 && b[0] == b'-' && (b'1'..=b'9').contains(&b[1]) {
                    out.push(OsString::from(format!("--level={}", b[1] as char)));
                    continue;
                }
            }
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_flags_become_levels() {
        let args = ["ferry", "-9", "-0", "x", "--", "-1"].map(OsString::from);
        let out = rewrite_level_shorthand(args);
        assert_eq!(
            out,
            ["ferry", "--level=9", "-0", "x", "--", "-1"].map(OsString::from)
        );
        let cli = Cli::try_parse_from(rewrite_level_shorthand(
            ["ferry", "-3", "d"].map(OsString::from),
        ))
        .unwrap();
        assert_eq!(cli.level, 3);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// `ferry verify`: re-read what was delivered and check it against the manifest.
#[derive(Debug, Parser)]
#[command(
    name = "ferry verify",
    bin_name = "ferry verify",
    about = "Check every delivered object against the manifest: one gzip member that decodes to the recorded length and CRC-32"
)]
pub struct VerifyCli {
    /// The sink to check, as given to `ferry --to`.
    #[arg(long, value_name = "SINK", default_value = "dir:ferry-out")]
    pub to: String,

    /// Check the manifest of shard K of N (as written by `ferry --shard K/N`).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
}
