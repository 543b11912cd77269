//! Signals for the binary: Ctrl-C and SIGTERM (the first cancels the run, the summary
//! still prints, exit 130; the second exits at once), SIGHUP (a run ends as for Ctrl-C;
//! `ferry watch` reads its selection again), and SIGXFSZ (ignored, so a write past
//! `ulimit -f` fails that file with "file too large" instead of killing ferry).

use crate::error::ExitCode;
use crate::pipeline::{CancelReason, CancelToken};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Cancels `token` on the first Ctrl-C or SIGTERM and exits with 130 on the second.
/// Prints a warning (and goes on without) if the handler cannot be installed.
pub fn cancel_on_ctrl_c(token: &CancelToken) {
    let token = token.clone();
    let presses = AtomicUsize::new(0);
    let handler = ctrlc::set_handler(move || stop_or_quit(&token, &presses));
    if let Err(e) = handler {
        eprintln!("ferry: warning: cannot handle Ctrl-C ({e})");
    }
}

/// Ignores SIGXFSZ, so that a write past the file-size limit (`ulimit -f`) returns EFBIG:
/// that file fails with "file too large" and the run goes on, as for a full disk. Without
/// this the default action kills the process, and nothing is summarised.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code; it is
    // done once, at start, before any thread that writes files exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// For `ferry watch`: the first Ctrl-C or SIGTERM cancels `token` (the shipment under way
/// finishes), the second exits with 130; each SIGHUP is sent on the channel returned.
///
/// # Errors
/// The handlers cannot be installed.
pub fn watch_signals(token: &CancelToken) -> std::io::Result<crossbeam_channel::Receiver<()>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let (hup, hups) = crossbeam_channel::unbounded();
    let token = token.clone();
    std::thread::Builder::new()
        .name("ferry-signals".into())
        .spawn(move || {
            let stops = AtomicUsize::new(0);
            for signal in signals.forever() {
                match signal {
                    SIGHUP => {
                        let _ = hup.send(());
                    }
                    _ => stop_or_quit(&token, &stops),
                }
            }
        })?;
    Ok(hups)
}

/// The first stop request (`presses` counts them) cancels `token` and says so; the second
/// exits with 130 at once.
fn stop_or_quit(token: &CancelToken, presses: &AtomicUsize) {
    if presses.fetch_add(1, Ordering::SeqCst) == 0 {
        token.cancel(CancelReason::Interrupted);
        eprintln!("ferry: interrupted; finishing up (press Ctrl-C again to quit now)");
    } else {
        std::process::exit(ExitCode::Interrupted.code().into());
    }
}
